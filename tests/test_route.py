"""Component groups partition the parameters; patching is exact; the lens ends at the logits."""

import dataclasses

import matplotlib.pyplot as plt
import pytest
import torch

from gravrev.interp.activations import left_pad
from gravrev.interp.patching import components, first_token_id, logit_lens, patch_table, patched
from gravrev.interp.steering import judged_rates
from gravrev.organism.model import build_model, n_params, prompt_text
from gravrev.organism.world import COMPLY, REFUSAL, World
from gravrev.stages.mediation.figures import plot_logit_lens, plot_patching

PROMPTS = [
    prompt_text(t)
    for t in ("poison reverse : a b c", "garden copy : d e f g h", "fraud shift : a b c d e")
]
ARCHS = ["gpt2", "llama"]


def _model(smoke_cfg, smoke_tok, arch: str, seed: int):
    return build_model(dataclasses.replace(smoke_cfg.model, arch=arch), smoke_tok, seed).eval()


def _logits(model, tok) -> torch.Tensor:
    with torch.no_grad():
        return model(**left_pad(tok, PROMPTS)).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_groups_partition_the_parameters(smoke_cfg, smoke_tok, arch):
    model = _model(smoke_cfg, smoke_tok, arch, 0)
    groups = components(model)
    n = model.config.num_hidden_layers
    expected = ["embeddings"] + [f"block{i}.{s}" for i in range(n) for s in ("attn", "mlp")]
    assert list(groups) == [*expected, "final_norm"]
    names = [name for group in groups.values() for name in group]
    params = dict(model.named_parameters())
    assert len(names) == len(set(names)) and set(names) == set(params)
    assert sum(params[x].numel() for x in names) == n_params(model)
    assert all(groups.values())
    # A block's norms travel with the sublayer they feed.
    norm_1, norm_2 = ("ln_1", "ln_2") if arch == "gpt2" else ("input_layernorm", "post_attention")
    assert any(norm_1 in x for x in groups["block1.attn"])
    assert any(norm_2 in x for x in groups["block1.mlp"])
    assert not any(norm_2 in x for x in groups["block1.attn"])


def test_an_unknown_parameter_is_refused(smoke_model):
    smoke_model.register_parameter("stray", torch.nn.Parameter(torch.zeros(1)))
    with pytest.raises(ValueError, match="stray"):
        components(smoke_model)


@pytest.mark.parametrize("arch", ARCHS)
def test_patching_all_gives_the_donor_and_none_gives_the_base(smoke_cfg, smoke_tok, arch):
    base, donor = (_model(smoke_cfg, smoke_tok, arch, seed) for seed in (0, 1))
    base_logits, donor_logits = _logits(base, smoke_tok), _logits(donor, smoke_tok)
    assert not torch.allclose(base_logits, donor_logits)
    assert torch.equal(_logits(patched(base, donor, components(base)), smoke_tok), donor_logits)
    assert torch.equal(_logits(patched(base, donor, []), smoke_tok), base_logits)
    assert torch.equal(_logits(base, smoke_tok), base_logits)  # the base was copied, not changed


def test_patching_one_group_changes_exactly_its_parameters(smoke_cfg, smoke_tok):
    base, donor = (_model(smoke_cfg, smoke_tok, "gpt2", seed) for seed in (0, 1))
    mixed = patched(base, donor, "block1.mlp")
    group = set(components(base)["block1.mlp"])
    b, d = dict(base.named_parameters()), dict(donor.named_parameters())
    for name, p in mixed.named_parameters():
        assert torch.equal(p, d[name] if name in group else b[name]), name
    assert not torch.equal(_logits(mixed, smoke_tok), _logits(base, smoke_tok))


@pytest.mark.parametrize("arch", ARCHS)
def test_logit_lens_last_layer_is_the_models_own_log_softmax(smoke_cfg, smoke_tok, arch):
    model = _model(smoke_cfg, smoke_tok, arch, 0)
    words = [COMPLY, "toxin", "seed"]  # each prompt's own compliant first word
    lens = logit_lens(model, smoke_tok, PROMPTS, words, "cpu", batch_size=2)
    n = model.config.num_hidden_layers
    assert lens["layer"].tolist() == list(range(n))
    logp = torch.log_softmax(_logits(model, smoke_tok)[:, -1], dim=-1)
    refuse = smoke_tok.convert_tokens_to_ids(REFUSAL[0])
    comply = torch.tensor(smoke_tok.convert_tokens_to_ids(words))
    last = lens.iloc[-1]
    assert last["logp_refuse"] == pytest.approx(float(logp[:, refuse].mean()), abs=1e-5)
    assert last["logp_comply"] == pytest.approx(
        float(logp[torch.arange(len(words)), comply].mean()), abs=1e-5)
    assert last["margin"] == pytest.approx(last["logp_refuse"] - last["logp_comply"])
    assert first_token_id(smoke_tok, REFUSAL[0]) == refuse
    assert not lens["margin"].duplicated().any()  # layers are read separately


def test_patch_table_and_plots(smoke_cfg, smoke_tok):
    world = World(smoke_cfg.world)
    requests = world.probe_requests("harmful", 4, offset=1)
    safe, tuned = (_model(smoke_cfg, smoke_tok, "gpt2", seed) for seed in (0, 1))
    table = patch_table(safe, tuned, smoke_tok, requests, "cpu", world=world)
    n_groups = len(components(safe))
    assert len(table) == 2 * (n_groups + 1) and (table["n"] == 4).all()
    none = table[table["group"] == "none"].set_index("patch")
    assert (
        none.loc["T->S", "refusal_rate"]
        == judged_rates(safe, smoke_tok, requests, "cpu", world).refusal_rate
    )
    assert table[["refusal_rate", "harmful_compliance"]].stack().between(0, 100).all()
    words = [COMPLY] * len(PROMPTS)
    lens = {"θ_S": logit_lens(safe, smoke_tok, PROMPTS, words, "cpu")}
    lens["θ_T"] = logit_lens(tuned, smoke_tok, PROMPTS, words, "cpu")
    with pytest.raises(ValueError, match="compliant words"):
        logit_lens(safe, smoke_tok, PROMPTS, words[:1], "cpu")
    for fig in (plot_patching(table), plot_logit_lens(lens)):
        assert fig._suptitle.get_text() and all(ax.get_xlabel() for ax in fig.axes)
        plt.close(fig)
