"""Config: a preset's values are in force, bad params fail early naming the field, Paths agree."""

import dataclasses
import json
import re
import typing

import pytest
import yaml

from gravrev import cli
from gravrev.config import load as config_module
from gravrev.config.fields import ConfigError
from gravrev.config.load import PRESETS, Config, load_config, load_presets, resolve
from gravrev.config.validate import check_organism, validated_config
from gravrev.store.paths import Paths


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """{'a.b.c': value} of every non-mapping value of a nested mapping."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def field(cfg: Config, dotted: str) -> object:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def same(got: object, want: object) -> bool:
    """A config value equals a YAML value (lists are tuples, ints may be floats)."""
    if isinstance(want, list):
        return isinstance(got, tuple) and len(got) == len(want) and all(
            same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, str) and isinstance(got, float):
        return got == float(want)  # YAML reads 1e-3 as a string
    return got == want and (type(got) is type(want) or isinstance(got, float))


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_is_tiny_overridden_by_its_own_values(preset):
    presets = load_presets()
    cfg = resolve({"preset": preset})
    own = leaves(presets[preset]) if preset != "tiny" else {}
    for key, value in {**leaves(presets["tiny"]), **own}.items():
        assert same(field(cfg, key), value), (key, field(cfg, key), value)


def test_no_config_field_has_a_default():
    """Every value comes from presets.yaml, never from a dataclass default in the code."""
    todo, seen = [Config], set()
    while todo:
        cls = todo.pop()
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING, f"{cls.__name__}.{f.name}"
            assert f.default_factory is dataclasses.MISSING, f"{cls.__name__}.{f.name}"
            if dataclasses.is_dataclass(hints[f.name]) and hints[f.name] not in seen:
                todo.append(hints[f.name])
    assert len(seen) >= 10  # it did walk into the sections


def test_a_key_missing_from_the_presets_is_an_error_naming_it(monkeypatch):
    presets = load_presets()
    del presets["tiny"]["finetune"]["warmup"]
    monkeypatch.setattr(config_module, "load_presets", lambda: presets)
    with pytest.raises(ConfigError, match=r"finetune\.warmup: missing"):
        resolve({"preset": "tiny"})


@pytest.mark.parametrize("params", [{}, {"preset": None}, {"finetune": {"lr": 1e-3}}])
def test_params_must_name_a_preset(params):
    with pytest.raises(ConfigError, match=r"^preset: missing"):
        resolve(params)


@pytest.mark.parametrize("preset", ["smoke", "tiny", "full"])
def test_organism_presets_have_the_papers_shape(preset):
    """Two deep phases, then a shallow one: the shape of the paper's history."""
    h = resolve({"preset": preset}).history
    assert h.safe.steps < h.helpful.steps <= h.pretrain.steps


def test_presets_file_names_exactly_the_presets():
    assert set(load_presets()) == set(PRESETS)


def test_override_wins_and_null_keeps_the_preset():
    smoke = resolve({"preset": "smoke"})
    assert resolve({"preset": "smoke", "finetune": {"lr": None}}) == smoke
    assert resolve({"preset": "smoke", "finetune": {"lr": "3e-3"}}).finetune.lr == 3e-3
    changed = resolve({"preset": "smoke", "model": {"n_layer": 3}})
    assert changed.model.n_layer == 3 and changed.model.n_embd == smoke.model.n_embd


def test_derived_properties():
    smoke = resolve({"preset": "smoke"})
    assert smoke.layer == smoke.model.n_layer // 2  # analysis.layer -1: the middle
    assert resolve({"preset": "smoke", "analysis": {"layer": 0}}).layer == 0
    assert resolve({"preset": "smoke", "history": {"seeds": [4, 2]}}).histories == ("h4", "h2")
    assert resolve({"preset": "hf"}).is_hf and not smoke.is_hf


@pytest.mark.parametrize("preset", PRESETS)
def test_the_resolved_config_reloads_from_its_json(preset):
    """data/config.json (to_dict as JSON) resolves back to the same config."""
    cfg = resolve({"preset": preset})
    assert resolve(json.loads(json.dumps(cfg.to_dict()))) == cfg


BAD = [
    ({"bogus": 1}, "bogus"),
    ({"finetune": {"lrr": 1e-3}}, "finetune.lrr"),
    ({"history": {"control": True}}, "history.control"),  # a key of the old layout
    ({"preset": "huge"}, "preset"),
    ({"finetune": 3}, "finetune"),
    ({"finetune": {"lr": "abc"}}, "finetune.lr"),
    ({"finetune": {"seeds": "x"}}, "finetune.seeds"),
    ({"finetune": {"seeds": [1, "two"]}}, "finetune.seeds[1]"),
    ({"finetune": {"seeds": [1, -1]}}, "finetune.seeds"),
    ({"finetune": {"steps": -5}}, "finetune.steps"),
    ({"finetune": {"steps": True}}, "finetune.steps"),
    ({"finetune": {"new_task": "bogus"}}, "finetune.new_task"),
    ({"finetune": {"warmup": 10}}, "finetune.warmup"),
    ({"history": {"seeds": []}}, "history.seeds"),
    ({"history": {"checks": {"enforce": "yes"}}}, "history.checks.enforce"),
    ({"history": {"safe_snapshots": 50}}, "history.safe_snapshots"),
    ({"model": {"n_layer": 2.5}}, "model.n_layer"),
    ({"model": {"n_embd": 31}}, "model.n_embd"),
    ({"finetune": {"lr": 2}}, "finetune.lr"),
    ({"finetune": {"lr": float("nan")}}, "finetune.lr"),
    ({"finetune": {"seeds": [1, 1]}}, "finetune.seeds"),
    ({"world": {"n_symbols": 100}}, "world.n_symbols"),
    ({"finetune": {"steps": 20, "log_steps": [1, 2, 5]}}, "finetune.log_steps"),
    ({"finetune": {"steps": 20, "log_steps": [5, 2, 20]}}, "finetune.log_steps"),
    ({"analysis": {"position": "first"}}, "analysis.position"),
    ({"analysis": {"null_samples": 10}}, "analysis.null_samples"),
    ({"blocking": {"arms": ["penalty"], "claim_arm": "freeze"}}, "blocking.claim_arm"),
    ({"blocking": {"arms": ["penalty", "pray"]}}, "blocking.arms"),
    ({"blocking": {"lambda_grid": [1.0, 0.1]}}, "blocking.lambda_grid"),
    ({"blocking": {"penalty_batch": 64}}, "blocking.penalty_batch"),
    ({"mediation": {"scales": [-1.0, 1.0]}}, "mediation.scales"),
    ({"executor": {"kind": "slurm"}}, "executor.kind"),
    ({"device": "tpu"}, "device"),
    ({"hf": {"dtype": "int8"}}, "hf.dtype"),
]


# Each value is valid alone and refused against another section (Config.validate).
BAD += [
    ({"regime": {"shock": {"arms": ["block", "random_block"]}}}, "regime.shock.arms"),
    ({"regime": {"shock": {"arms": ["block", "freeze"]}}}, "regime.shock.arms"),
    ({"blocking": {"calibration_histories": 3}}, "blocking.calibration_histories"),
]


@pytest.mark.parametrize(("params", "name"), BAD, ids=[f for _, f in BAD])
def test_bad_value_names_its_field(params, name):
    with pytest.raises(ConfigError, match=rf"(^|\.){re.escape(name)}:"):
        resolve({"preset": "smoke", **params})


CROSS = [
    ({"analysis": {"layer": 9}}, "analysis.layer"),  # tiny has 4 layers
    ({"analysis": {"layer": 4}}, "analysis.layer"),
    ({"finetune": {"early_steps": [1, 500]}}, "finetune.early_steps"),
]


@pytest.mark.parametrize(("params", "name"), CROSS, ids=[f for _, f in CROSS])
def test_cross_field_checks_name_the_field(params, name):
    cfg = resolve({"preset": "tiny", **params})  # each field is valid alone
    with pytest.raises(ConfigError, match=rf"^{re.escape(name)}:"):
        check_organism(cfg)


def test_check_organism_accepts_the_last_layer():
    check_organism(resolve({"preset": "tiny", "analysis": {"layer": 3}}))


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("preset: smoke\nfinetune: [1, 2\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_config(path)


def test_repo_params_yaml_is_in_force(repo_root):
    """Every value params.yaml sets is the value in force; the rest are its preset's."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    cfg = validated_config(repo_root / "params.yaml")
    preset = resolve({"preset": params["preset"]})
    for key, value in leaves({k: v for k, v in params.items() if k != "preset"}).items():
        want = field(preset, key) if value is None else value
        assert same(field(cfg, key), want) or field(cfg, key) == want, key


def test_repo_params_yaml_lists_every_config_key(repo_root):
    """params.yaml shows every knob (null = the preset's value), so `dvc exp run -S` finds it."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert set(leaves(load_presets()["tiny"])) <= set(leaves(params))


# ----------------------------------------------------------------------------- Paths


def test_paths_live_under_data_and_keep_dots_in_arm_names(tmp_path):
    paths = Paths(tmp_path)
    run = paths.run("finetune", "h0", "sens_adamw_lr0.001_bs16", 1)
    assert run == tmp_path / "data" / "finetune" / "h0" / "sens_adamw_lr0.001_bs16_seed1.npz"
    assert paths.checkpoint("pretrained", "h0") == paths.checkpoint("pretrained", "h1")
    assert paths.checkpoint("safe", "h0") != paths.checkpoint("safe", "h1")
    assert paths.acts("safe", "h1").parent == paths.checkpoint("safe", "h1").parent
    for p in (run, paths.probes, paths.v_rev, paths.metrics_file("claims"), paths.timings,
              paths.resolved_config, paths.safe_trajectory("h0")):
        assert p.is_relative_to(paths.data), p
    assert paths.metrics_file("nulls") != paths.timings / "nulls.json"
    assert Paths.v_rev_key("h0", "checkpoint_diff", "last") == "h0/checkpoint_diff/last"


# ----------------------------------------------------------------------------- CLI


def test_cli_validate_refuses_a_bad_file_and_writes_nothing(tmp_path, monkeypatch, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("preset: smoke\nfinetune:\n  lr: 2\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--params", str(params), "validate", "--write"]) == 2
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
    assert resolve(printed) == resolve({"preset": "smoke", "finetune": {"lr": 3e-3}})
    assert not (tmp_path / "data").exists()


def test_cli_validate_write_saves_the_config_and_a_stamp_that_never_changes(tmp_path,
                                                                           monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text("preset: smoke\n")
    monkeypatch.chdir(tmp_path)
    paths = Paths(tmp_path)
    assert cli.main(["--params", str(params), "validate", "--write"]) == 0
    assert resolve(json.loads(paths.resolved_config.read_text())) == resolve({"preset": "smoke"})
    stamp = (paths.data / "config.ok").read_bytes()
    params.write_text("preset: smoke\nfinetune:\n  lr: 3.0e-3\n")
    assert cli.main(["--params", str(params), "validate", "--write"]) == 0
    assert json.loads(paths.resolved_config.read_text())["finetune"]["lr"] == 3e-3
    assert (paths.data / "config.ok").read_bytes() == stamp
    assert sorted(p.name for p in paths.data.iterdir()) == ["config.json", "config.ok"]
