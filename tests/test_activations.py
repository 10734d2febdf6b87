"""Residual-stream capture: hooks agree with output_hidden_states, never leak, pool padding-free."""

import dataclasses

import numpy as np
import pytest
import torch

from gravrev.interp.activations import capture, left_pad, probe_activations
from gravrev.interp.hooks import blocks
from gravrev.organism.model import build_model, prompt_text

PROMPTS = [
    prompt_text(t)
    for t in (
        "poison reverse : a b c",
        "garden copy : d e f g h",
        "music sort : j i",
        "fraud shift : a b c d e",
    )
]


def _final_norm(model) -> torch.nn.Module:
    return model.transformer.ln_f if hasattr(model, "transformer") else model.model.norm


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_capture_equals_output_hidden_states(smoke_cfg, smoke_tok, arch):
    model = build_model(dataclasses.replace(smoke_cfg.model, arch=arch), smoke_tok, seed=1).eval()
    n = model.config.num_hidden_layers
    batch = left_pad(smoke_tok, PROMPTS)
    with torch.no_grad(), capture(model, range(n)) as resid_post:
        hidden = model(**batch, output_hidden_states=True).hidden_states
    assert len(hidden) == n + 1 and sorted(resid_post) == list(range(n))
    for layer in range(n - 1):
        torch.testing.assert_close(resid_post[layer], hidden[layer + 1])
    # The last hidden state has the final norm applied; the block's output does not.
    with torch.no_grad():
        torch.testing.assert_close(_final_norm(model)(resid_post[n - 1]), hidden[n])


def _hook_count(model) -> int:
    return sum(len(b._forward_hooks) for b in blocks(model))


def test_hooks_are_removed_even_when_the_body_raises(smoke_model):
    with pytest.raises(RuntimeError, match="boom"):
        with capture(smoke_model, [0, 1]):
            assert _hook_count(smoke_model) == 2
            raise RuntimeError("boom")
    assert _hook_count(smoke_model) == 0
    with capture(smoke_model, [1]):
        pass
    assert _hook_count(smoke_model) == 0


def test_left_pad_puts_every_last_token_at_the_end(smoke_tok):
    batch = left_pad(smoke_tok, PROMPTS)
    assert (batch["input_ids"][:, -1] == smoke_tok.convert_tokens_to_ids("assistant")).all()
    lengths = batch["attention_mask"].sum(1)
    assert (batch["position_ids"][:, -1] == lengths - 1).all()


def test_probe_activations_shapes(smoke_model, smoke_tok):
    acts = probe_activations(smoke_model, smoke_tok, PROMPTS, "cpu")
    n, d = smoke_model.config.num_hidden_layers, smoke_model.config.hidden_size
    assert set(acts) == {"last", "mean"}
    for position in ("last", "mean"):
        assert acts[position].shape == (n, len(PROMPTS), d)
        assert acts[position].dtype == np.float32
    assert not np.allclose(acts["last"], acts["mean"])


def test_padding_does_not_change_the_activations(smoke_model, smoke_tok):
    """Batched (left-padded) activations equal those of each prompt alone, both positions."""
    batched = probe_activations(smoke_model, smoke_tok, PROMPTS, "cpu")
    alone = probe_activations(smoke_model, smoke_tok, PROMPTS, "cpu", batch_size=1)
    for position in ("last", "mean"):
        np.testing.assert_allclose(batched[position], alone[position], rtol=1e-4, atol=1e-5)
