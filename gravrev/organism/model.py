"""The model organism's tokenizer and model: a real tokenizer and a standard transformers model."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from gravrev.config.organism import ModelConfig, WorldConfig
from gravrev.organism.world import ASSISTANT, EOS, PAD, UNK, USER, vocabulary

# The organism's chat template renders exactly its training format, so the `hf` code path
# (apply_chat_template) sees the same tokens as the organism path.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)
MAX_POSITIONS = 64
ACTIVATION = "gelu_pytorch_tanh"
# Loading and saving bars of transformers would drown the stages' own progress bars.
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()


def build_tokenizer(cfg: WorldConfig) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the world's vocabulary (the `tokenizers` library)."""
    vocab = {w: i for i, w in enumerate(vocabulary(cfg))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=MAX_POSITIONS,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def prompt_text(request_text: str) -> str:
    """The organism's prompt: the user turn, then the assistant marker."""
    return f"{USER} {request_text} {ASSISTANT}"


def build_model(cfg: ModelConfig, tok: PreTrainedTokenizerFast, seed: int) -> PreTrainedModel:
    """A freshly initialised causal LM of a standard architecture (GPT-2 or Llama)."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tok),
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if cfg.arch == "gpt2":
        mc = GPT2Config(
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_positions=MAX_POSITIONS,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            # GPT-2's gelu_new formula in one fused kernel: the same bytes on every CPU path
            # the pins allow (tests/test_step_bytes.py), and faster than the chain of ops.
            activation_function=ACTIVATION,
            **common,
        )
    else:
        mc = LlamaConfig(
            hidden_size=cfg.n_embd,
            num_hidden_layers=cfg.n_layer,
            num_attention_heads=cfg.n_head,
            num_key_value_heads=cfg.n_head,
            intermediate_size=4 * cfg.n_embd,
            max_position_embeddings=MAX_POSITIONS,
            tie_word_embeddings=True,
            **common,
        )
    model = AutoModelForCausalLM.from_config(mc)
    return model


def save_checkpoint(model: PreTrainedModel, tok: PreTrainedTokenizerFast, path: Path) -> None:
    """save_pretrained in safetensors, with the tokenizer beside it."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)


def load_checkpoint(
    path: Path, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a checkpoint exactly as a real one: safetensors only, no remote code, offline."""
    path = Path(path)
    model = AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=True, trust_remote_code=False, local_files_only=True, dtype=dtype
    )
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
