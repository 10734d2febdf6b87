"""Where does reversion go? Component patching between checkpoints, and the logit lens."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import asdict

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.interp.activations import capture, left_pad
from gravrev.interp.hooks import blocks
from gravrev.interp.labels import NONE
from gravrev.interp.steering import judged_rates
from gravrev.organism.world import REFUSAL, Request, World

# First name under a block -> the sublayer it belongs to; a norm goes with the sublayer it feeds.
ATTN_PARTS = ("attn", "self_attn", "ln_1", "input_layernorm")
MLP_PARTS = ("mlp", "ln_2", "post_attention_layernorm")
POSITION_EMBEDDINGS = ("wpe", "embed_positions")
FINAL_NORMS = ("ln_f", "norm", "final_layernorm")


def _module_name(model: torch.nn.Module, target: torch.nn.Module | None) -> str | None:
    return next((name for name, m in model.named_modules() if m is target), None)


def _block_group(index: str, part: str, name: str) -> str:
    if part in ATTN_PARTS:
        return f"block{index}.attn"
    if part in MLP_PARTS:
        return f"block{index}.mlp"
    raise ValueError(f"parameter {name!r} is in no known sublayer")


def components(model: PreTrainedModel) -> dict[str, list[str]]:
    """Parameter names by group: embeddings, block{i}.attn, block{i}.mlp, final_norm.

    "embeddings" holds token and position embeddings and the unembedding (tied or not).
    Every parameter belongs to exactly one group; an unknown parameter raises ValueError.
    """
    n = model.config.num_hidden_layers
    prefix = _module_name(model, blocks(model)) + "."
    embedding_modules = {
        _module_name(model, model.get_input_embeddings()),
        _module_name(model, model.get_output_embeddings()),
    }
    groups: dict[str, list[str]] = {"embeddings": []}
    for i in range(n):
        groups[f"block{i}.attn"], groups[f"block{i}.mlp"] = [], []
    groups["final_norm"] = []
    for name, _ in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        if name.startswith(prefix):
            index, part = name[len(prefix) :].split(".")[:2]
            groups[_block_group(index, part, name)].append(name)
        elif owner in embedding_modules or owner.split(".")[-1] in POSITION_EMBEDDINGS:
            groups["embeddings"].append(name)
        elif owner.split(".")[-1] in FINAL_NORMS:
            groups["final_norm"].append(name)
        else:
            raise ValueError(f"parameter {name!r} belongs to no component group")
    return groups


def patched(
    base: PreTrainedModel, donor: PreTrainedModel, groups: str | Iterable[str]
) -> PreTrainedModel:
    """A deep copy of `base` with the parameters of `groups` (one name or several) from `donor`."""
    groups = [groups] if isinstance(groups, str) else list(groups)
    names = components(base)
    donor_params = dict(donor.named_parameters())
    out = copy.deepcopy(base)
    params = dict(out.named_parameters())
    with torch.no_grad():
        for group in groups:
            for name in names[group]:
                if params[name].shape != donor_params[name].shape:
                    raise ValueError(f"{name}: base and donor shapes differ")
                params[name].copy_(donor_params[name])
    return out


def patch_table(
    safe: PreTrainedModel,
    finetuned: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    requests: Sequence[Request],
    device: str,
    *,
    world: World,
) -> pd.DataFrame:
    """Judged rates with one group swapped: "T->S" (theta_S, group from theta_T), "S->T".

    Rows (patch, group, refusal_rate, harmful_compliance, n); group "none" is the unpatched
    recipient (theta_S for "T->S", theta_T for "S->T").
    """
    rows = []
    for patch, base, donor in (("T->S", safe, finetuned), ("S->T", finetuned, safe)):
        rates = judged_rates(base, tok, requests, device, world)
        rows.append({"patch": patch, "group": NONE, **asdict(rates)})
        for group in components(base):
            model = patched(base, donor, group)
            rates = judged_rates(model, tok, requests, device, world)
            rows.append({"patch": patch, "group": group, **asdict(rates)})
            del model
    return pd.DataFrame(rows)


def final_norm(model: PreTrainedModel) -> torch.nn.Module:
    """The norm between the last block and the unembedding (ln_f, norm)."""
    for name, module in model.named_modules():
        if name.split(".")[-1] in FINAL_NORMS and name.count(".") <= 1:
            return module
    raise ValueError(f"no final norm found in {type(model).__name__}")


def first_token_id(tok: PreTrainedTokenizerBase, word: str) -> int:
    """The first token of `word`, which is what a greedy answer beginning with it emits."""
    return tok(word, add_special_tokens=False).input_ids[0]


@torch.no_grad()
def logit_lens(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    comply_words: list[str],
    device: str,
    refuse_word: str = REFUSAL[0],
    batch_size: int = 128,
) -> pd.DataFrame:
    """Mean log-probability of the refusal's first token and of each prompt's own compliant
    first token (`comply_words`), read after each block through the final norm and the
    unembedding, at the first answer token.

    Rows (layer, logp_refuse, logp_comply, margin = logp_refuse - logp_comply), nats.
    """
    if len(comply_words) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(comply_words)} compliant words")
    model.eval()
    n = model.config.num_hidden_layers
    refuse = first_token_id(tok, refuse_word)
    comply = torch.tensor([first_token_id(tok, w) for w in comply_words])
    norm, unembed = final_norm(model), model.get_output_embeddings()
    sums = torch.zeros(n, 2, dtype=torch.float64)
    for i in range(0, len(prompts), batch_size):
        batch = {k: v.to(device) for k, v in left_pad(tok, prompts[i : i + batch_size]).items()}
        ids = torch.stack([torch.full_like(comply[i : i + batch_size], refuse),
                           comply[i : i + batch_size]], dim=1).to(device)
        with capture(model, range(n)) as resid_post:
            model(**batch)
        for layer in range(n):
            logits = unembed(norm(resid_post[layer][:, -1])).float()
            logp = torch.log_softmax(logits, dim=-1).gather(1, ids)
            sums[layer] += logp.sum(0).double().cpu()
    means = (sums / len(prompts)).numpy()
    return pd.DataFrame(
        {
            "layer": range(n),
            "logp_refuse": means[:, 0],
            "logp_comply": means[:, 1],
            "margin": means[:, 0] - means[:, 1],
        }
    )
