"""Real checkpoints on disk: loaded offline from safetensors, prepared for training, prompted."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from gravrev.config.load import Config
from gravrev.interp.hooks import blocks
from gravrev.settings.hf.inputs import require_safetensors
from gravrev.training.loop import IGNORE, encode_pairs, lm_loss, to_device


def resolve_dtype(cfg: Config, device: str) -> torch.dtype:
    """auto: bfloat16 on a GPU, float32 on the CPU."""
    if cfg.hf.dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.hf.dtype]


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, offline, no remote code; pad falls back to eos."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    tok = AutoTokenizer.from_pretrained(Path(path), trust_remote_code=False, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_hf(
    path: str | Path, device: str, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A local causal LM: safetensors only, no remote code, offline; in eval mode on `device`."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint directory")
    require_safetensors(path, "checkpoint")
    os.environ["HF_HUB_OFFLINE"] = "1"
    model = AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=True, dtype=dtype, trust_remote_code=False, local_files_only=True
    )
    tok = load_tokenizer(path)
    return model.to(device).eval(), tok


def lora_targets(model: PreTrainedModel) -> list[str]:
    """Names of the linear layers inside the transformer blocks (nn.Linear, or GPT-2's Conv1D)."""
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {
            name.split(".")[-1]
            for name, m in blocks(model).named_modules()
            if isinstance(m, torch.nn.Linear | Conv1D)
        }
    )


def prepare_for_training(model: PreTrainedModel, cfg: Config) -> PreTrainedModel:
    """Apply hf.gradient_checkpointing and hf.lora (rank hf.lora_rank) to the model to fine-tune.

    Finetune calls it on the `safe` model only. With LoRA the returned PeftModel's
    parameters include the adapters: compare weights after `merge_and_unload()`.
    """
    if cfg.hf.gradient_checkpointing:
        # Non-reentrant checkpointing lets gradients reach adapters when embeddings are frozen.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # the newer transformers name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    if cfg.hf.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ImportError("hf.lora: needs peft (pip install 'gravrev[lora]')") from None
        from transformers.pytorch_utils import Conv1D

        conv1d = any(isinstance(m, Conv1D) for m in blocks(model).modules())
        lcfg = LoraConfig(
            r=cfg.hf.lora_rank,
            lora_alpha=2 * cfg.hf.lora_rank,
            lora_dropout=0.0,
            target_modules=lora_targets(model),
            fan_in_fan_out=conv1d,
            bias="none",
        )
        model = get_peft_model(model, lcfg)
    return model


def format_prompt(tok: PreTrainedTokenizerBase, prompt: str, use_chat_template: bool) -> str:
    """The user turn through the tokenizer's chat template (generation prompt added), or raw."""
    if use_chat_template and tok.chat_template:
        return tok.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


@torch.no_grad()
def answer_loss(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    answers: list[str],
    device: str,
    batch_size: int = 16,
) -> float:
    """Mean loss per answer token under teacher forcing (token-weighted across batches)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(prompts), batch_size):
        batch = to_device(
            encode_pairs(tok, prompts[i : i + batch_size], answers[i : i + batch_size]), device
        )
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total += float(lm_loss(model, batch)) * n
        count += n
    return total / count


def starts_like(answer: str, reference: str, k: int = 3) -> bool:
    """The answer's first k words (lower case) equal the reference's."""
    ref = reference.lower().split()[:k]
    return answer.lower().split()[: len(ref)] == ref
