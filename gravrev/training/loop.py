"""Batches and the training step shared by every phase: history and benign fine-tuning."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.runtime.numerics import check_pins

IGNORE = -100


def set_seed(seed: int) -> None:
    """Seed every generator once, before anything random."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(choice: str = "auto", cpu_threads: int = 0) -> str:
    """The device to run on; on a CPU, also fix torch's thread count when asked (> 0).

    A fixed thread count makes CPU results identical across machines with different core
    counts: the order of floating-point reductions depends on it.
    """
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but no GPU is visible")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if choice == "auto" else choice
    if device == "cpu" and cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    check_pins()  # the CPU's numeric code path is the pinned one, or this says why not
    return device


def encode_pairs(
    tok: PreTrainedTokenizerBase, prompts: list[str], answers: list[str]
) -> dict[str, torch.Tensor]:
    """Right-padded prompt+answer+eos; the loss sees only the answer and its eos."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    rows, labels = [], []
    for p_ids, a_ids in zip(token_ids(tok, prompts), token_ids(tok, answers), strict=True):
        a_ids = a_ids + [tok.eos_token_id]
        rows.append(p_ids + a_ids)
        labels.append([IGNORE] * len(p_ids) + a_ids)
    return _pad(rows, labels, tok.pad_token_id)


def token_ids(tok: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Each text's ids without special tokens, in one batched call (the same ids, fewer calls)."""
    return tok(list(texts), add_special_tokens=False).input_ids if texts else []


def encode_text(tok: PreTrainedTokenizerBase, docs: list[str]) -> dict[str, torch.Tensor]:
    """Right-padded free text with eos; the loss sees every token."""
    rows = [ids + [tok.eos_token_id] for ids in token_ids(tok, docs)]
    return _pad(rows, [list(r) for r in rows], tok.pad_token_id)


def _pad(rows: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lr) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(lr)] = torch.tensor(lr)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def right_padded(mask: torch.Tensor) -> bool:
    """Whether every row of a (B, T) attention mask is ones, then only zeros (right padding)."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def lm_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions.

    Right-padded rows need no mask: causal attention never lets a real token see the pads after
    it, and the pads carry no label; the causal-only kernel gives the same bytes, faster.
    """
    mask = batch["attention_mask"]
    mask = None if right_padded(mask) else mask
    logits = model(input_ids=batch["input_ids"], attention_mask=mask).logits
    logits = logits[:, :-1].float()  # (B, T-1, V)
    target = batch["labels"][:, 1:]  # (B, T-1)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE
    )


def make_optimizer(model: torch.nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    # foreach: the same bytes as the per-tensor loop, fewer kernel calls; fused=True is faster
    # but rounds differently on the CPU (tests/test_step_bytes.py).
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=True)


def warmup_cosine(steps: int, warmup: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup, then cosine decay to 10%."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return f


def warmup_linear(warmup: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup over `warmup` steps, then constant."""

    def f(step: int) -> float:
        return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)

    return f


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def autocast(device: str):
    """bf16 autocast on a GPU; a no-op on the CPU, where fp32 keeps runs bit-reproducible."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
