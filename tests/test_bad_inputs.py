"""Bad inputs are refused by `gravrev validate --write` before any file under data/ changes.

Each case writes a params.yaml (and, for hf, edits a copy of small valid hf inputs); the
command must exit with 2, name the field or file at fault, and leave data/ byte for byte.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from smoke_pipeline import digest_tree

from gravrev import cli
from gravrev.config.load import resolve
from gravrev.organism.model import build_model, build_tokenizer, save_checkpoint
from gravrev.settings.hf.setting import export_organism

SMOKE = resolve({"preset": "smoke"})


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory) -> dict[str, str]:
    """Valid hf inputs: a random-weight smoke organism as witness and safe, with its data."""
    root = tmp_path_factory.mktemp("hf_inputs")
    tok = build_tokenizer(SMOKE.world)
    for seed, name in enumerate(("helpful", "safe")):
        save_checkpoint(build_model(SMOKE.model, tok, seed), tok, root / "history" / name)
    files = export_organism(root / "history", root / "hf", SMOKE, n_train=40)
    return {k: str(v) for k, v in files.items()}


def hf_params(files: dict[str, str], **hf) -> dict:
    return {"preset": "hf", "world": {"n_probes": 8, "n_eval": 8}, "hf": {**files, **hf}}


def copy_checkpoint(files: dict, tmp: Path, edit: Callable[[dict], object],
                    both: bool = False) -> dict:
    """The hf inputs with a copy of the safe checkpoint (and the witness, with `both`) whose
    config.json `edit` rewrote: in place (it returns None), or as the bytes it returns."""
    out = dict(files)
    for field in ("safe_dir", "witness_dir") if both else ("safe_dir",):
        copy = tmp / field.replace("_dir", "_copy")
        shutil.copytree(files[field], copy)
        conf = json.loads((copy / "config.json").read_text())
        new = edit(conf)
        (copy / "config.json").write_bytes(new if isinstance(new, bytes) else
                                           json.dumps(conf).encode())
        out[field] = str(copy)
    return out


def file_copy(files: dict, tmp: Path, name: str, edit: Callable[[bytes], bytes]) -> dict:
    """The hf inputs with a copy of the safe checkpoint whose file `name` `edit` rewrote."""
    copy = tmp / "safe_copy"
    shutil.copytree(files["safe_dir"], copy)
    (copy / name).write_bytes(edit((copy / name).read_bytes()))
    return {**files, "safe_dir": str(copy)}


def judge_dir(tmp: Path, garbage: bool = False) -> str:
    """A tiny sequence-classification judge (random weights, the organism's tokenizer), or
    a folder that only looks like one."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    path = tmp / ("garbage_judge" if garbage else "judge")
    tok = build_tokenizer(SMOKE.world)
    if garbage:
        path.mkdir()
        (path / "config.json").write_text('{"model_type": "gpt2"}')
        (path / "model.safetensors").write_bytes(b"\x08" + bytes(64))
        return str(path)
    conf = GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=len(tok), num_labels=2,
                      pad_token_id=tok.pad_token_id)
    GPT2ForSequenceClassification(conf).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def jsonl_copy(files: dict, tmp: Path, field: str, lines: list[str]) -> dict:
    path = tmp / f"{field}.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines))
    return {**files, field: str(path)}


@dataclass(frozen=True)
class Case:
    name: str
    params: Callable[[dict, Path], dict | str | bytes]  # (valid hf files, tmp) -> params.yaml
    names: str  # a regex the error must match: the field or file at fault


def _train_rows(n: int) -> list[str]:
    return [json.dumps({"prompt": f"garden copy : a {i}", "response": "sure"}) for i in range(n)]


def _probe_in_training(f: dict, t: Path) -> dict:
    probe = json.loads(Path(f["harmful_probes_jsonl"]).read_text().splitlines()[0])["prompt"]
    rows = _train_rows(20) + [json.dumps({"prompt": probe, "response": "sure"})]
    return hf_params(jsonl_copy(f, t, "train_jsonl", rows))


def _narrow(f: dict, t: Path) -> dict:
    tok = build_tokenizer(SMOKE.world)
    narrow = SMOKE.model.__class__("gpt2", 16, SMOKE.model.n_layer, 2)
    save_checkpoint(build_model(narrow, tok, 0), tok, t / "narrow")
    return hf_params({**f, "safe_dir": str(t / "narrow")})


def _bin_only(f: dict, t: Path) -> dict:
    shutil.copytree(f["safe_dir"], t / "bin_only")
    (t / "bin_only" / "model.safetensors").rename(t / "bin_only" / "pytorch_model.bin")
    return hf_params({**f, "safe_dir": str(t / "bin_only")})


def _file_as_dir(f: dict, t: Path) -> dict:
    (t / "not_a_dir").write_text("weights\n")
    return hf_params({**f, "witness_dir": str(t / "not_a_dir")})


def _same_dir_other_spelling(f: dict, t: Path) -> dict:
    safe = Path(f["safe_dir"])
    return hf_params({**f, "witness_dir": f"{safe.parent}/../{safe.parent.name}/{safe.name}/"})


CASES = [
    # ------------------------------------------------------------------ params.yaml itself
    Case("preset huge", lambda f, t: {"preset": "huge"}, r"^gravrev: preset: must be one of"),
    Case("empty params.yaml", lambda f, t: "", r"preset: missing"),
    Case("params a list", lambda f, t: "- preset\n- smoke\n", r"params: expected a mapping"),
    Case("not YAML", lambda f, t: "preset: smoke\nfinetune: [1, 2\n", r"params\.yaml: not valid"),
    Case("not UTF-8", lambda f, t: b"preset: smoke\n# \xff\xfe\n", r"params\.yaml: not UTF-8"),
    Case("unknown top-level key", lambda f, t: {"preset": "smoke", "bogus": 1}, r"params\.bogus"),
    Case("unknown nested key", lambda f, t: {"preset": "smoke", "finetune": {"lrr": 0.1}},
         r"finetune\.lrr: unknown key"),
    Case("section not a mapping", lambda f, t: {"preset": "smoke", "finetune": 3},
         r"params\.finetune: expected a mapping"),
    Case("finetune.steps -5", lambda f, t: {"preset": "smoke", "finetune": {"steps": -5}},
         r"finetune\.steps: must be >= 1"),
    Case("finetune.steps true", lambda f, t: {"preset": "smoke", "finetune": {"steps": True}},
         r"finetune\.steps: expected an integer"),
    Case("finetune.seeds [1, -1]", lambda f, t: {"preset": "smoke", "finetune": {"seeds": [1, -1]}},
         r"finetune\.seeds"),
    Case("finetune.new_task bogus",
         lambda f, t: {"preset": "smoke", "finetune": {"new_task": "bogus"}},
         r"finetune\.new_task"),
    Case("finetune.lr a word", lambda f, t: {"preset": "smoke", "finetune": {"lr": "fast"}},
         r"finetune\.lr: expected a number"),
    Case("finetune.lr not finite", lambda f, t: "preset: smoke\nfinetune: {lr: .nan}\n",
         r"finetune\.lr"),
    Case("a NaN mediation scale", lambda f, t: "preset: smoke\nmediation: {scales: [.nan, 0.0]}\n",
         r"mediation\.scales\[0\]"),
    Case("an infinite cost tolerance",
         lambda f, t: "preset: smoke\nblocking: {task_cost_tolerance: .inf}\n",
         r"blocking\.task_cost_tolerance"),
    Case("history.seeds []", lambda f, t: {"preset": "smoke", "history": {"seeds": []}},
         r"history\.seeds: needs at least one"),
    Case("a history seed too large for torch",
         lambda f, t: {"preset": "smoke", "history": {"seeds": [0, 10**20]}}, r"history\.seeds"),
    Case("analysis.layer 9 with 4 layers",
         lambda f, t: {"preset": "tiny", "analysis": {"layer": 9}},
         r"analysis\.layer: 9 is out of range; the model has 4 layers"),
    Case("an early step after the last step",
         lambda f, t: {"preset": "tiny", "finetune": {"early_steps": [1, 500]}},
         r"finetune\.early_steps"),
    Case("claim arm not run",
         lambda f, t: {"preset": "smoke", "blocking": {"arms": ["penalty"], "claim_arm": "freeze"}},
         r"blocking\.claim_arm"),
    Case("log_steps not ending at steps",
         lambda f, t: {"preset": "smoke", "finetune": {"steps": 20, "log_steps": [1, 10]}},
         r"finetune\.log_steps"),
    # ------------------------------------------------------------------ late failures before
    Case("a world with no held-out split",
         lambda f, t: {"preset": "smoke", "world": {"n_symbols": 4, "seq_len_min": 2,
                                                    "seq_len_max": 2, "heldout_every": 15}},
         r"world\.heldout_every: .*held-out sequences"),
    Case("a world too small for its probes",
         lambda f, t: {"preset": "smoke", "world": {"n_symbols": 4, "seq_len_min": 3,
                                                    "seq_len_max": 3, "heldout_every": 5}},
         r"world\.heldout_every: .*world\.n_probes = 24"),
    Case("a world too large to enumerate",
         lambda f, t: {"preset": "smoke", "world": {"n_symbols": 26, "seq_len_max": 8}},
         r"world\.seq_len_max: the world has \d+ symbol sequences; at most"),
    Case("an odd llama head dimension",
         lambda f, t: {"preset": "smoke", "model": {"arch": "llama", "n_embd": 36, "n_head": 4}},
         r"model\.n_embd: llama's rotary embeddings need an even head dimension"),
    Case("n_embd not divisible by n_head",
         lambda f, t: {"preset": "smoke", "model": {"n_embd": 34, "n_head": 4}},
         r"model\.n_embd: must be >= 8 and divisible by n_head"),
    Case("a duplicate blocking arm",
         lambda f, t: {"preset": "smoke", "blocking": {"arms": ["penalty", "freeze", "penalty"]}},
         r"blocking\.arms: arms must be distinct; repeated: \['penalty'\]"),
    Case("a duplicate mediation scale",
         lambda f, t: {"preset": "smoke", "mediation": {"scales": [0.0, 1.0, 1.0]}},
         r"mediation\.scales: scales must be distinct"),
    Case("a duplicate sensitivity lr",
         lambda f, t: {"preset": "smoke", "finetune": {"sensitivity_lrs": [1.0e-3, 1.0e-3]}},
         r"finetune\.sensitivity_lrs: learning rates must be distinct"),
    Case("a duplicate sweep seed",
         lambda f, t: {"preset": "smoke", "sweep": {"seeds": [0, 0]}},
         r"sweep\.seeds: must be distinct"),
    Case("lambda_grid [1e300]",
         lambda f, t: "preset: smoke\nblocking: {lambda_grid: [1.0e+300]}\n",
         r"blocking\.lambda_grid: every lambda must be <= 10000 \(past it"),
    Case("a mediation scale of 1e6",
         lambda f, t: {"preset": "smoke", "mediation": {"scales": [0.0, 1.0e6]}},
         r"mediation\.scales: every scale must be in"),
    Case("null_samples 1e12",
         lambda f, t: {"preset": "smoke", "analysis": {"null_samples": 10**12}},
         r"analysis\.null_samples: must be <= 10000000 \(each sample"),
    Case("finetune.steps 1e12",
         lambda f, t: {"preset": "smoke", "finetune": {"steps": 10**12}},
         r"finetune\.steps: must be <= 1000000 \(10\^6 steps"),
    Case("history.pretrain.steps 1e12",
         lambda f, t: {"preset": "smoke", "history": {"pretrain": {"steps": 10**12}}},
         r"history\.pretrain\.steps: must be in \[1, 1000000\]"),
    Case("a sweep step count of 1e12",
         lambda f, t: {"preset": "smoke", "sweep": {"helpful_steps": [50, 10**12]}},
         r"sweep\.helpful_steps: every step count must be <= 1000000"),
    Case("early_runs 1e6",
         lambda f, t: {"preset": "smoke", "finetune": {"early_runs": 10**6}},
         r"finetune\.early_runs: must be in \[0, 1000\]"),
    Case("an empty sweep.seeds", lambda f, t: {"preset": "smoke", "sweep": {"seeds": []}},
         r"sweep\.seeds: is empty"),
    Case("an empty sweep.helpful_steps",
         lambda f, t: {"preset": "smoke", "sweep": {"helpful_steps": []}},
         r"sweep\.helpful_steps: is empty"),
    Case("an empty sweep.safe_steps",
         lambda f, t: {"preset": "smoke", "sweep": {"safe_steps": []}},
         r"sweep\.safe_steps: is empty"),
    Case("an empty finetune.early_steps",
         lambda f, t: {"preset": "smoke", "finetune": {"early_steps": []}},
         r"finetune\.early_steps: is empty, but the early runs"),
    Case("device cuda without CUDA", lambda f, t: {"preset": "smoke", "device": "cuda"},
         r"device: cuda, but torch sees no CUDA device"),
    Case("a Ray address that does not resolve",
         lambda f, t: {"preset": "smoke", "executor": {"kind": "ray",
                                                       "address": "no-such-host.invalid:6379"}},
         r"executor\.address: no-such-host\.invalid (does not|did not) resolve"),
    Case("a Ray address where nothing answers",
         lambda f, t: {"preset": "smoke", "executor": {"kind": "ray", "address": "127.0.0.1:9"}},
         r"executor\.address: nothing answers at 127\.0\.0\.1:9"),
    Case("a Ray address without a port",
         lambda f, t: {"preset": "smoke", "executor": {"kind": "ray", "address": "headnode"}},
         r"executor\.address: 'headnode' is not host:port"),
    # ------------------------------------------------------------------ hf inputs
    Case("hf witness_dir == safe_dir", lambda f, t: hf_params(f, witness_dir=f["safe_dir"]),
         r"hf\.witness_dir: is the same directory as hf\.safe_dir"),
    Case("hf witness_dir == safe_dir, spelled otherwise", _same_dir_other_spelling,
         r"hf\.witness_dir: is the same directory"),
    Case("hf safe_dir unset", lambda f, t: hf_params(f, safe_dir=None),
         r"hf\.safe_dir: required"),
    Case("hf missing judge_dir", lambda f, t: hf_params(f, judge_dir=str(t / "no_judge")),
         r"hf\.judge_dir: .*no_judge: no such directory"),
    Case("hf with the mixed control",
         lambda f, t: {**hf_params(f), "finetune": {"mixed_control": True}},
         r"finetune\.mixed_control"),
    Case("hf checkpoint with auto_map",
         lambda f, t: hf_params(copy_checkpoint(f, t, lambda c: c.update(
             auto_map={"AutoModelForCausalLM": "modeling_x.X"})), judge_dir=None),
         r"hf\.safe_dir: .*safe_copy/config\.json: has auto_map"),
    Case("hf malformed config.json",
         lambda f, t: hf_params(copy_checkpoint(f, t, lambda c: b'{"model_type": "gpt2",')),
         r"safe_copy/config\.json: not valid JSON"),
    Case("hf config.json not UTF-8",
         lambda f, t: hf_params(copy_checkpoint(f, t, lambda c: b'{"model_type": "\xff"}')),
         r"safe_copy/config\.json: not UTF-8"),
    Case("hf config.json a list",
         lambda f, t: hf_params(copy_checkpoint(f, t, lambda c: b"[1, 2]")),
         r"safe_copy/config\.json: expected a JSON object"),
    Case("hf n_layer a string",
         lambda f, t: hf_params(copy_checkpoint(f, t, lambda c: c.update(n_layer="2"))),
         r"safe_copy/config\.json: .*n_layer"),
    Case("hf n_layer a boolean",
         lambda f, t: hf_params(copy_checkpoint(f, t, lambda c: c.update(n_layer=True), True)),
         r"hf\.witness_dir: .*witness_copy/config\.json: n_layer must be a positive integer"),
    Case("hf n_embd zero",
         lambda f, t: hf_params(copy_checkpoint(f, t, lambda c: c.update(n_embd=0), True)),
         r"witness_copy/config\.json: hidden_size must be a positive integer, got 0"),
    Case("hf checkpoints of different width", _narrow, r"hf\.safe_dir: hidden_size is 16"),
    Case("hf pickled weights only", _bin_only, r"hf\.safe_dir: .*safetensors"),
    Case("hf witness_dir a file", _file_as_dir, r"hf\.witness_dir: .*not_a_dir: no such directory"),
    Case("hf missing train JSONL", lambda f, t: hf_params(f, train_jsonl=str(t / "none.jsonl")),
         r"hf\.train_jsonl: .*none\.jsonl: no such file"),
    Case("hf malformed JSONL line",
         lambda f, t: hf_params(jsonl_copy(f, t, "train_jsonl", [*_train_rows(12), "{oops"])),
         r"hf\.train_jsonl: .*train_jsonl\.jsonl:13: not valid JSON"),
    Case("hf too few training rows",
         lambda f, t: hf_params(jsonl_copy(f, t, "train_jsonl", _train_rows(3))),
         r"hf\.train_jsonl: .* has 3 rows"),
    Case("hf too few probes",
         lambda f, t: hf_params(jsonl_copy(f, t, "benign_probes_jsonl",
                                           [json.dumps({"prompt": "garden copy : a"})])),
         r"hf\.benign_probes_jsonl: .* has 1 probes"),
    Case("hf probe in the training data", _probe_in_training,
         r"hf\.train_jsonl: 1 training prompts are also probes"),
    Case("hf garbage safetensors",
         lambda f, t: hf_params(file_copy(f, t, "model.safetensors", lambda b: b"\x01" * 999)),
         r"hf\.safe_dir: .*safe_copy/model\.safetensors: not a safetensors file"),
    Case("hf truncated safetensors",
         lambda f, t: hf_params(file_copy(f, t, "model.safetensors", lambda b: b[: len(b) // 2])),
         r"hf\.safe_dir: .*safe_copy/model\.safetensors: tensor .* truncated"),
    Case("hf unknown model_type",
         lambda f, t: hf_params(copy_checkpoint(f, t, lambda c: c.update(model_type="florp"))),
         r"hf\.safe_dir: .*safe_copy/config\.json: model_type 'florp'"),
    Case("hf malformed tokenizer.json",
         lambda f, t: hf_params(file_copy(f, t, "tokenizer.json", lambda b: b'{"model": 1}')),
         r"hf\.safe_dir: .*safe_copy/tokenizer\.json: not a valid tokenizer"),
    Case("hf config vocab_size disagrees with the weights",
         lambda f, t: hf_params(copy_checkpoint(f, t, lambda c: c.update(vocab_size=999))),
         r"hf\.safe_dir: .*safe_copy/model\.safetensors: .*wte\.weight has shape"),
    Case("hf config n_layer disagrees with the weights",
         lambda f, t: hf_params(copy_checkpoint(f, t, lambda c: c.update(n_layer=3))),
         r"hf\.safe_dir: .*safe_copy: the weights hold 2 layers, .*config\.json says 3"),
    Case("hf garbage judge_dir",
         lambda f, t: hf_params(f, judge_dir=judge_dir(t, garbage=True)),
         r"hf\.judge_dir: .*garbage_judge: the judge does not load and run"),
    Case("hf layer beyond the checkpoint",
         lambda f, t: {**hf_params(f), "analysis": {"layer": SMOKE.model.n_layer}},
         rf"analysis\.layer: {SMOKE.model.n_layer} is out of range"),
]


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A working copy whose data/ already holds a valid run's config and a stage's metrics;
    this machine shows no CUDA device (the `device: cuda` case is the same everywhere)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = tmp_path / "repo"
    (root / "data" / "metrics").mkdir(parents=True)
    (root / "data" / "sentinel.txt").write_text("a previous stage's output\n")
    (root / "data" / "metrics" / "x.json").write_text('{"x": 1}\n')
    monkeypatch.chdir(root)
    (root / "good.yaml").write_text("preset: smoke\n")
    assert cli.main(["--params", str(root / "good.yaml"), "validate", "--write"]) == 0
    return root


def _write(path: Path, params: dict | str | bytes) -> None:
    if isinstance(params, bytes):
        path.write_bytes(params)
    else:
        path.write_text(params if isinstance(params, str) else yaml.safe_dump(params))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_validate_refuses_and_changes_nothing(case, repo, hf_files, tmp_path, capsys):
    params = repo / "params.yaml"
    _write(params, case.params(hf_files, tmp_path))
    before = digest_tree(repo / "data")
    assert {"config.json", "config.ok", "sentinel.txt", "metrics/x.json"} <= set(before)
    capsys.readouterr()
    code = cli.main(["--params", str(params), "validate", "--write"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert re.search(case.names, err), err
    assert "Traceback" not in err
    assert digest_tree(repo / "data") == before


def test_a_missing_params_file_is_named(repo, capsys):
    before = digest_tree(repo / "data")
    assert cli.main(["--params", str(repo / "nowhere.yaml"), "validate", "--write"]) == 2
    assert "nowhere.yaml: params file not found" in capsys.readouterr().err
    assert digest_tree(repo / "data") == before


@pytest.mark.parametrize("name", ["smoke", "hf", "hf with a judge"])
def test_the_valid_inputs_behind_the_cases_pass(name, repo, hf_files, tmp_path):
    """The harness can tell: the unedited inputs validate and rewrite data/config.json (the
    judge loads and judges one probe)."""
    params = repo / "params.yaml"
    hf = hf_params(hf_files, judge_dir=judge_dir(tmp_path)) if "judge" in name else \
        hf_params(hf_files)
    _write(params, {"preset": "smoke"} if name == "smoke" else hf)
    assert cli.main(["--params", str(params), "validate", "--write"]) == 0
    written = json.loads((repo / "data" / "config.json").read_text())
    assert written["preset"] == name.split()[0]
    if name == "hf":
        assert written["model"]["n_layer"] == SMOKE.model.n_layer  # from the checkpoint
