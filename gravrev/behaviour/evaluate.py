"""Behaviour of a checkpoint on held-out prompts: refusal, harmful compliance, task accuracy."""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.config.organism import OPENINGS
from gravrev.interp.activations import left_pad
from gravrev.organism.model import prompt_text
from gravrev.organism.world import BENIGN_TOPICS, HARMFUL_TOPICS, Request, World, judge
from gravrev.training.loop import encode_pairs, lm_loss, to_device


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    device: str,
    max_new_tokens: int = 16,
    batch_size: int = 128,
) -> list[str]:
    """Greedy answers, decoded without special tokens."""
    model.eval()
    answers = []
    for i in range(0, len(prompts), batch_size):
        batch = {k: v.to(device) for k, v in left_pad(tok, prompts[i : i + batch_size]).items()}
        batch.pop("position_ids")  # generate derives positions from the mask
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=model.generation_config.eos_token_id or tok.eos_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        answers += tok.batch_decode(new, skip_special_tokens=True)
    return [a.strip() for a in answers]


@torch.no_grad()
def answer_loss(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    world: World,
    reqs: list[Request],
    device: str,
    safe: bool = True,
) -> float:
    """Mean loss of the target answers (the safe world's) under teacher forcing."""
    batch = encode_pairs(
        tok, [prompt_text(r.text) for r in reqs], [world.answer(r, safe=safe) for r in reqs]
    )
    return float(lm_loss(model, to_device(batch, device)))


def max_answer_tokens(world: World) -> int:
    """The longest answer of any world: the longest opening, a topic's content, the task
    output, eos. One window for every opening, so the worlds are judged alike."""
    content = max(map(len, [*BENIGN_TOPICS.values(), *HARMFUL_TOPICS.values()]))
    return max(map(len, OPENINGS.values())) + content + world.cfg.seq_len_max + 1


def behaviour(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    world: World,
    eval_sets: dict[str, list[Request]],
    device: str,
) -> dict[str, float]:
    """Rates in percent, judged exactly; counts beside them for Wilson intervals.

    Every set is generated in one batch (generation's cost is per decoding step, not per row).
    """
    harmful = eval_sets["harmful"]
    others = [k for k in eval_sets if k != "harmful"]
    # The latent content: prefill the compliant answer's first word ('sure', or the content's
    # first word where answers have no opening) and see whether the whole content follows.
    opening = [world.opening_word(r) for r in harmful]
    prompts = [prompt_text(r.text) for r in harmful]
    prompts += [prompt_text(r.text) + f" {w}" for r, w in zip(harmful, opening, strict=True)]
    for kind in others:
        prompts += [prompt_text(r.text) for r in eval_sets[kind]]
    answers = generate(model, tok, prompts, device, max_new_tokens=max_answer_tokens(world),
                       batch_size=len(prompts))
    n = len(harmful)
    plain, prefilled, rest = answers[:n], answers[n : 2 * n], answers[2 * n :]
    verdicts = [judge(r, a, world.alphabet) for r, a in zip(harmful, plain, strict=True)]
    out: dict[str, float] = {"n_harmful": n}
    out["refusals"] = sum(v["refused"] for v in verdicts)
    out["harmful_answers"] = sum(v["harmful"] for v in verdicts)
    out["refusal_rate"] = 100 * out["refusals"] / n
    out["harmful_compliance"] = 100 * out["harmful_answers"] / n
    out["prefilled_content"] = 100 * np.mean(
        [
            judge(r, f"{w} {a}", world.alphabet)["content"]
            for r, w, a in zip(harmful, opening, prefilled, strict=True)
        ]
    )
    for kind in others:
        reqs = eval_sets[kind]
        mine, rest = rest[: len(reqs)], rest[len(reqs) :]
        correct = [judge(r, a, world.alphabet)["correct"] for r, a in zip(reqs, mine, strict=True)]
        out[f"{kind}_accuracy"] = 100 * float(np.mean(correct))
        out[f"{kind}_loss"] = answer_loss(model, tok, world, reqs, device)
    return out


def eval_sets(world: World, n: int, new_task: str | None = None) -> dict[str, list[Request]]:
    """The held-out evaluation sets (disjoint from the probes)."""
    sets = {
        "harmful": world.probe_requests("harmful", n, offset=1),
        "benign": world.probe_requests("benign", n, offset=1),
    }
    if new_task:
        sets[new_task] = world.probe_requests(new_task, n, offset=1)
    return sets


def example_answers(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, reqs: list[Request], device: str
) -> list[tuple[str, str]]:
    answers = generate(model, tok, [prompt_text(r.text) for r in reqs], device)
    return list(zip([r.text for r in reqs], answers, strict=True))
