"""The organism's checkpoints load like real ones: safetensors, a fast tokenizer, a template."""

import dataclasses

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from gravrev.interp.activations import left_pad
from gravrev.organism.model import build_model, load_checkpoint, prompt_text, save_checkpoint

PROMPTS = [prompt_text("poison reverse : a b c"), prompt_text("garden copy : d e f g h")]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_checkpoint_round_trip_gives_the_same_logits(smoke_cfg, smoke_tok, tmp_path, arch):
    model = build_model(dataclasses.replace(smoke_cfg.model, arch=arch), smoke_tok, seed=3).eval()
    save_checkpoint(model, smoke_tok, tmp_path / "ckpt")
    loaded, tok = load_checkpoint(tmp_path / "ckpt")
    batch = left_pad(tok, PROMPTS)
    assert torch.equal(batch["input_ids"], left_pad(smoke_tok, PROMPTS)["input_ids"])
    with torch.no_grad():
        want, got = model(**batch).logits, loaded(**batch).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert type(loaded) is type(model)
    assert not loaded.training


def test_saved_dir_is_safetensors_and_a_fast_tokenizer(smoke_model, smoke_tok, tmp_path):
    save_checkpoint(smoke_model, smoke_tok, tmp_path / "ckpt")
    names = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= names
    assert "pytorch_model.bin" not in names
    _, tok = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.pad_token == smoke_tok.pad_token and tok.eos_token == smoke_tok.eos_token


def test_tokenizer_knows_every_word_of_the_world(smoke_tok):
    ids = smoke_tok(PROMPTS[0], add_special_tokens=False).input_ids
    assert smoke_tok.unk_token_id not in ids
    assert smoke_tok.decode(ids) == PROMPTS[0]


def test_chat_template_renders_the_training_prompt(smoke_model, smoke_tok, tmp_path):
    text = "fraud sort : c a b"
    messages = [{"role": "user", "content": text}]
    save_checkpoint(smoke_model, smoke_tok, tmp_path / "ckpt")
    _, loaded = load_checkpoint(tmp_path / "ckpt")
    for tok in (smoke_tok, loaded):
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert rendered == prompt_text(text)
