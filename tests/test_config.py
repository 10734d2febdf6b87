"""Config: presets resolve; bad params fail early, naming the field; the CLI refuses them."""

import re

import pytest
import yaml

from gravrev import cli
from gravrev.config import PRESETS, ConfigError, load_config, load_presets, resolve


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_resolves(preset):
    cfg = resolve({"preset": preset})
    assert cfg.preset == preset
    assert cfg.finetune.log_steps[-1] == cfg.finetune.steps


@pytest.mark.parametrize("preset", ["smoke", "tiny", "full"])
def test_organism_presets_have_the_papers_shape(preset):
    """Two deep phases, then a shallow one (DESIGN.md: the history's shape)."""
    h = resolve({"preset": preset}).history
    assert h.safe.steps < h.helpful.steps <= h.pretrain.steps


def test_presets_file_names_exactly_the_presets():
    assert set(load_presets()) == set(PRESETS)


def test_override_wins_and_null_keeps_the_preset():
    smoke = resolve({"preset": "smoke"})
    assert resolve({"preset": "smoke", "finetune": {"lr": None}}) == smoke
    assert resolve({"preset": "smoke", "finetune": {"lr": "3e-3"}}).finetune.lr == 3e-3
    assert resolve({"preset": "smoke", "model": {"n_layer": 3}}).model.n_layer == 3


BAD = [
    ({"bogus": 1}, "bogus"),
    ({"finetune": {"lrr": 1e-3}}, "finetune.lrr"),
    ({"preset": "huge"}, "preset"),
    ({"finetune": {"lr": "abc"}}, "finetune.lr"),
    ({"finetune": {"seeds": "x"}}, "finetune.seeds"),
    ({"finetune": {"seeds": [1, "two"]}}, "finetune.seeds[1]"),
    ({"history": {"control": "yes"}}, "history.control"),
    ({"model": {"n_layer": 2.5}}, "model.n_layer"),
    ({"finetune": {"lr": 2}}, "finetune.lr"),
    ({"finetune": {"seeds": [1, 1]}}, "finetune.seeds"),
    ({"world": {"n_symbols": 100}}, "world.n_symbols"),
    ({"finetune": {"steps": 20, "log_steps": [1, 2, 5]}}, "finetune.log_steps"),
    ({"finetune": {"steps": 20, "log_steps": [5, 2, 20]}}, "finetune.log_steps"),
    ({"analysis": {"position": "first"}}, "analysis.position"),
    ({"analysis": {"layer": 9}}, "analysis.layer"),
    ({"blocking": {"arms": ["penalty"], "claim_arm": "freeze"}}, "blocking.claim_arm"),
    ({"blocking": {"arms": ["penalty", "pray"]}}, "blocking.arms"),
]


@pytest.mark.parametrize(("params", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_value_names_its_field(params, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        resolve({"preset": "smoke", **params})


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("preset: smoke\nfinetune: [1, 2\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


def test_repo_params_yaml_loads(repo_root):
    cfg = load_config(repo_root / "params.yaml")
    assert cfg.preset in PRESETS


def test_repo_params_yaml_lists_every_config_key(repo_root):
    """params.yaml shows every knob (null = the preset's value), so `dvc exp run -S` finds it."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    tiny = load_presets()["tiny"]

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    assert keys(tiny) <= keys(params)


def test_cli_validate_refuses_a_bad_file_and_writes_nothing(tmp_path, monkeypatch, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("preset: smoke\nfinetune:\n  lr: 2\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--params", str(params), "validate"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "finetune.lr" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_cli_validate_prints_the_resolved_config(tmp_path, monkeypatch, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("preset: smoke\nfinetune:\n  lr: 3.0e-3\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--params", str(params), "validate"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)  # JSON is YAML
    assert printed["preset"] == "smoke"
    assert printed["finetune"]["lr"] == 3e-3
