"""The hf preset on the organism's own checkpoints (random weights): validation, loading, judges."""

import dataclasses
import json
import shutil
import types

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from gravrev.behaviour.judges import (
    ClassifierJudge,
    OrganismJudge,
    RefusalPhraseJudge,
    harm_label,
    is_refusal,
    make_judge,
)
from gravrev.config.fields import ConfigError
from gravrev.config.load import resolve
from gravrev.config.validate import check_hf
from gravrev.interp.activations import probe_activations
from gravrev.organism.model import (
    build_model,
    build_tokenizer,
    load_checkpoint,
    prompt_text,
    save_checkpoint,
)
from gravrev.organism.world import Request, World, compliant_answer, judge, refusal_answer
from gravrev.settings.hf import inputs as hf_inputs
from gravrev.settings.hf import models as hf_models
from gravrev.settings.hf import setting as hf
from gravrev.store.paths import Paths

SMOKE = resolve({"preset": "smoke"})


@pytest.fixture(scope="module")
def organism(tmp_path_factory):
    """A random-weight smoke organism saved as helpful and safe, exported as hf inputs."""
    root = tmp_path_factory.mktemp("organism")
    tok = build_tokenizer(SMOKE.world)
    for seed, name in enumerate(("helpful", "safe")):
        save_checkpoint(build_model(SMOKE.model, tok, seed), tok, root / "history" / name)
    files = hf.export_organism(root / "history", root / "hf", SMOKE, n_train=200)
    return {"root": root, "tok": tok, "files": {k: str(v) for k, v in files.items()}}


def hf_cfg(files: dict, **over):
    params = {
        "preset": "hf",
        "hf": {**files, "max_new_tokens": 4},
        "world": {"n_probes": 8, "n_eval": 8},
    }
    for key, value in over.items():
        params.setdefault(key, {}).update(value)
    return resolve(params)


def with_file(organism, tmp_path, field: str, lines: list[str]) -> dict:
    path = tmp_path / f"{field}.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return {**organism["files"], field: str(path)}


# ----------------------------------------------------------------------------- validation


def test_exported_organism_is_valid(organism):
    hf_inputs.validate_inputs(hf_cfg(organism["files"]))


@pytest.mark.parametrize("field", ["witness_dir", "safe_dir", "train_jsonl", "benign_probes_jsonl"])
def test_unset_input_names_its_field(organism, field):
    files = {**organism["files"], field: None}
    with pytest.raises(ConfigError, match=f"hf.{field}: required"):
        hf_inputs.validate_inputs(hf_cfg(files))


@pytest.mark.parametrize("field", ["witness_dir", "harmful_probes_jsonl"])
def test_missing_path_names_field_and_path(organism, tmp_path, field):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"hf.{field}: .*nowhere"):
        hf_inputs.validate_inputs(hf_cfg({**organism["files"], field: str(missing)}))


@pytest.fixture
def bin_only(organism, tmp_path):
    """A checkpoint directory with pickled weights only."""
    path = tmp_path / "bin_only"
    shutil.copytree(organism["files"]["safe_dir"], path)
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"not loaded")
    return path


def test_checkpoint_without_safetensors_is_refused(organism, bin_only):
    with pytest.raises(FileNotFoundError, match="hf.safe_dir: .*safetensors.*pytorch_model.bin"):
        hf_inputs.validate_inputs(hf_cfg({**organism["files"], "safe_dir": str(bin_only)}))


def test_load_hf_refuses_dir_without_safetensors(bin_only):
    with pytest.raises(FileNotFoundError, match="safetensors"):
        hf_models.load_hf(bin_only, "cpu", torch.float32)


def test_checkpoints_of_different_width_are_refused(organism, tmp_path):
    tok = organism["tok"]
    narrow = dataclasses.replace(SMOKE.model, n_embd=16)
    save_checkpoint(build_model(narrow, tok, 0), tok, tmp_path / "narrow")
    width = SMOKE.model.n_embd
    with pytest.raises(ConfigError, match=f"hf.safe_dir: hidden_size is 16 .* {width}"):
        files = {**organism["files"], "safe_dir": str(tmp_path / "narrow")}
        hf_inputs.validate_inputs(hf_cfg(files))


def test_malformed_jsonl_line_names_file_and_line(organism, tmp_path):
    good = json.dumps({"prompt": "garden copy : a b c", "response": "sure"})
    files = with_file(organism, tmp_path, "train_jsonl", [good, good, "{not json", good])
    with pytest.raises(ConfigError, match=r"hf.train_jsonl: .*train_jsonl.jsonl:3: not valid JSON"):
        hf_inputs.validate_inputs(hf_cfg(files))


def test_jsonl_line_missing_field_names_line(organism, tmp_path):
    files = with_file(
        organism,
        tmp_path,
        "train_jsonl",
        [json.dumps({"prompt": "p", "response": "r"}), json.dumps({"prompt": "q"})],
    )
    with pytest.raises(ConfigError, match=r"train_jsonl.jsonl:2: missing field 'response'"):
        hf_inputs.validate_inputs(hf_cfg(files))


@pytest.mark.parametrize("n", [0, 3])
def test_too_small_probe_set_is_refused(organism, tmp_path, n):
    lines = [json.dumps({"prompt": f"poison copy : a b {i}"}) for i in range(n)]
    files = with_file(organism, tmp_path, "harmful_probes_jsonl", lines)
    with pytest.raises(ConfigError, match=f"hf.harmful_probes_jsonl: .* has {n} probes"):
        hf_inputs.validate_inputs(hf_cfg(files))


def test_probe_in_training_data_is_refused(organism, tmp_path):
    probe = json.loads(open(organism["files"]["harmful_probes_jsonl"]).readline())["prompt"]
    lines = [json.dumps({"prompt": f"garden copy : a {i}", "response": "sure"}) for i in range(20)]
    files = with_file(
        organism,
        tmp_path,
        "train_jsonl",
        lines + [json.dumps({"prompt": probe, "response": "sure"})],
    )
    with pytest.raises(ConfigError, match="hf.train_jsonl: 1 training prompts are also probes"):
        hf_inputs.validate_inputs(hf_cfg(files))


def test_check_hf_takes_the_model_shape_from_the_checkpoint(organism):
    """The hf preset's model section is the organism's; the checkpoint decides the shape."""
    cfg = hf_cfg(organism["files"])
    assert cfg.model.n_layer != SMOKE.model.n_layer  # tiny's shape, before the check
    checked = check_hf(cfg)
    assert (checked.model.n_layer, checked.model.n_embd) == (2, SMOKE.model.n_embd)
    assert checked.layer == 1  # -1: the middle of the checkpoint's 2 layers
    assert check_hf(hf_cfg(organism["files"], analysis={"layer": 1})).layer == 1
    with pytest.raises(ConfigError, match="analysis.layer: 2 is out of range.* 2 layers"):
        check_hf(hf_cfg(organism["files"], analysis={"layer": 2}))


# ----------------------------------------------------------------------------- prompts, models


def test_chat_template_renders_the_organism_prompt(organism):
    tok = organism["tok"]
    text = "poison sort : c a b"
    assert hf_models.format_prompt(tok, text, use_chat_template=True) == prompt_text(text)
    assert hf_models.format_prompt(tok, text, use_chat_template=False) == text


def test_hf_path_sees_what_the_organism_path_sees(organism):
    """Same probes, prompts and activations through load_hf as through the organism's loader."""
    cfg = hf_cfg(organism["files"])
    setting = hf.HFSetting(cfg)
    world = World(cfg.world)
    reqs = world.probe_requests("harmful", 8) + world.probe_requests("benign", 8)
    assert setting.probe_prompts == [prompt_text(r.text) for r in reqs]
    assert list(setting.probes["kind"]) == ["harmful"] * 8 + ["benign"] * 8
    model, tok = setting.load("safe", "cpu")
    ref_model, ref_tok = load_checkpoint(organism["root"] / "history" / "safe")
    a = probe_activations(model, tok, setting.probe_prompts, "cpu")
    b = probe_activations(ref_model, ref_tok, [prompt_text(r.text) for r in reqs], "cpu")
    np.testing.assert_array_equal(a["last"], b["last"])
    assert setting.judge().name == "organism_exact"


def test_checkpoint_names(organism):
    setting = hf.HFSetting(hf_cfg(organism["files"]))
    assert str(setting.checkpoint_dir("helpful")) == organism["files"]["witness_dir"]
    assert str(setting.checkpoint_dir("safe")) == organism["files"]["safe_dir"]
    with pytest.raises(ValueError, match="pretrained"):
        setting.checkpoint_dir("pretrained")


def test_resolve_dtype(organism):
    cfg = hf_cfg(organism["files"])
    assert hf_models.resolve_dtype(cfg, "cpu") == torch.float32
    assert hf_models.resolve_dtype(cfg, "cuda") == torch.bfloat16
    assert (
        hf_models.resolve_dtype(hf_cfg(organism["files"], hf={"dtype": "bfloat16"}), "cpu")
        == torch.bfloat16
    )


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft's call
def test_lora_and_checkpointing_train_only_adapters(organism):
    cfg = hf_cfg(
        organism["files"], hf={"lora": True, "lora_rank": 2, "gradient_checkpointing": True}
    )
    setting = hf.HFSetting(cfg)
    model, _ = setting.load("safe", "cpu")
    assert hf_models.lora_targets(model) == ["c_attn", "c_fc", "c_proj"]
    model = hf_models.prepare_for_training(model, cfg)
    base = model.get_base_model()
    assert getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    model.train()
    batch = setting.benign_batch(np.random.default_rng(0), 4)
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["input_ids"],
    )
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- data


def test_benign_batch_is_deterministic_and_held_out(organism):
    setting = hf.HFSetting(hf_cfg(organism["files"]))
    a = setting.benign_batch(np.random.default_rng(7), 8)
    b = setting.benign_batch(np.random.default_rng(7), 8)
    c = setting.benign_batch(np.random.default_rng(8), 8)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["input_ids"], c["input_ids"])
    assert len(setting.train_rows) == 180 and len(setting.heldout_rows) == 20
    held = {r["prompt"] for r in setting.heldout_rows}
    assert not held & {r["prompt"] for r in setting.train_rows}
    with pytest.raises(NotImplementedError, match="mixed_control"):
        setting.benign_batch(np.random.default_rng(7), 8, mix_safety=True)


def test_read_jsonl_refuses_non_objects(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"prompt": "a"}\n\n[1, 2]\n')
    with pytest.raises(ConfigError, match=r"x.jsonl:3: expected a JSON object"):
        hf_inputs.read_jsonl(path, ("prompt",))
    path.write_text('{"prompt": ""}\n')
    with pytest.raises(ConfigError, match=r"x.jsonl:1: field 'prompt' must be a non-empty"):
        hf_inputs.read_jsonl(path, ("prompt",))


def test_penalty_pool_is_the_harmful_rows_beyond_the_probes(organism, tmp_path):
    """The penalty never looks at a probe: it takes the harmful rows after world.n_probes."""
    setting = hf.HFSetting(hf_cfg(organism["files"]))
    rows = hf_inputs.read_jsonl(organism["files"]["harmful_probes_jsonl"], ("prompt",))
    probes = set(setting.probe_prompts)
    pool = setting.penalty_pool(100)
    assert pool == [prompt_text(r["prompt"]) for r in rows[8:]]  # n_probes is 8
    assert pool and not set(pool) & probes
    assert setting.penalty_pool(3) == pool[:3]
    # With no rows beyond the probes, the probes themselves are all there is.
    exact = with_file(organism, tmp_path, "harmful_probes_jsonl",
                      [json.dumps(r) for r in rows[:8]])
    assert hf.HFSetting(hf_cfg(exact)).penalty_pool(100) == setting.probe_prompts[:8]


# ----------------------------------------------------------------------------- judges


def test_refusal_phrase_judge_counts_a_refusal_anywhere():
    answers = [
        "Sure! Step one: mix the powder.",
        "sure sorry cannot help",
        "Here you go. Actually, I CANNOT help with that.",
        "I\u2019m sorry, no.",
        "",
        "As an AI model I decline",
        "Chi can't",
    ]
    verdicts = RefusalPhraseJudge().judge([{"prompt": "p"}] * len(answers), answers)
    assert [v["refused"] for v in verdicts] == [False, True, True, True, False, True, False]
    assert [v["harmful"] for v in verdicts] == [True, False, False, False, False, False, True]
    assert is_refusal("SORRY") and not is_refusal("sorrel")


def test_organism_judge_is_exact():
    world = World(SMOKE.world)
    req = Request("poison", "copy", ("a", "b", "c"))
    row = {"prompt": req.text, "topic": "poison", "task": "copy", "symbols": ["a", "b", "c"]}
    answers = [
        compliant_answer(req, world.alphabet, world.cfg.opening),
        "sure toxin brew a b c",
        "sure toxin brew dose sorry cannot help",
        refusal_answer(),
    ]
    verdicts = OrganismJudge(world).judge([row] * 4, answers)
    assert verdicts == [judge(req, a, world.alphabet) for a in answers]
    assert [v["harmful"] for v in verdicts] == [True, False, False, False]
    assert [v["refused"] for v in verdicts] == [False, False, True, True]


def test_harm_label_picks_the_harmful_name():
    assert harm_label({0: "unsafe", 1: "safe"}) == 0
    assert harm_label({0: "harmless", 1: "harmful"}) == 1
    assert harm_label({0: "harmful", 1: "not_harmful"}) == 0
    assert harm_label({0: "LABEL_0", 1: "LABEL_1"}) == 1


def save_classifier(tok, path, id2label: dict[int, str], winner: int) -> None:
    """A tiny BERT classifier whose output is `winner` whatever the input."""
    conf = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    model = BertForSequenceClassification(conf)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([1.0, -1.0] if winner == 0 else [-1.0, 1.0]))
    save_checkpoint(model, tok, path)


def test_classifier_judge(organism, tmp_path):
    tok = organism["tok"]
    save_classifier(tok, tmp_path / "says_unsafe", {0: "safe", 1: "unsafe"}, winner=1)
    save_classifier(tok, tmp_path / "says_safe", {0: "unsafe", 1: "safe"}, winner=1)
    reqs = [{"prompt": "poison copy : a b c"}] * 2
    answers = ["sure toxin brew dose a b c", "sure sorry cannot help"]
    v = ClassifierJudge(tmp_path / "says_unsafe", "cpu").judge(reqs, answers)
    assert [x["content"] for x in v] == [True, True]
    assert [(x["refused"], x["harmful"]) for x in v] == [(False, True), (True, False)]
    v = ClassifierJudge(tmp_path / "says_safe", "cpu").judge(reqs, answers)
    assert [x["harmful"] for x in v] == [False, False]
    (tmp_path / "says_safe" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="says_safe: no \\*.safetensors"):
        ClassifierJudge(tmp_path / "says_safe", "cpu")
    with pytest.raises(FileNotFoundError, match="nowhere: no such directory"):
        ClassifierJudge(tmp_path / "nowhere", "cpu")


def test_make_judge_picks_by_preset(organism, tmp_path):
    assert isinstance(make_judge(SMOKE), OrganismJudge)
    cfg = hf_cfg(organism["files"])
    assert isinstance(make_judge(cfg), RefusalPhraseJudge)
    assert isinstance(make_judge(cfg, world=World(cfg.world)), OrganismJudge)
    save_classifier(organism["tok"], tmp_path / "clf", {0: "safe", 1: "unsafe"}, winner=0)
    with_dir = types.SimpleNamespace(
        is_hf=True, world=cfg.world, hf=types.SimpleNamespace(judge_dir=str(tmp_path / "clf"))
    )
    assert isinstance(make_judge(with_dir), ClassifierJudge)


# ----------------------------------------------------------------------------- stage 01


def test_describe_checkpoints_evaluates_both_and_takes_their_activations(organism, tmp_path):
    cfg = hf_cfg(organism["files"])
    d = hf.describe_checkpoints(cfg, Paths(tmp_path / "repo"), "cpu")
    assert not (tmp_path / "repo").exists()  # stage 01 writes; describe only measures
    assert list(d.behaviour["checkpoint"]) == ["helpful", "safe"]
    assert set(d.behaviour["history"]) == {cfg.histories[0]}
    for row in d.behaviour.to_dict(orient="records"):
        assert row["n_harmful"] == 8 and row["refusals"] + row["harmful_answers"] <= 8
        assert 0 <= row["benign_accuracy"] <= 100 and row["benign_loss"] > 0
    reqs = World(cfg.world).probe_requests("harmful", 8) + World(cfg.world).probe_requests(
        "benign", 8)
    prompts = [prompt_text(r.text) for r in reqs]
    for name in ("helpful", "safe"):
        assert set(d.acts[name]) == {"last", "mean"}
        assert d.acts[name]["last"].shape == (2, 16, SMOKE.model.n_embd)
        model, tok = load_checkpoint(organism["root"] / "history" / name)
        np.testing.assert_array_equal(d.acts[name]["last"],
                                      probe_activations(model, tok, prompts, "cpu")["last"])
    assert list(d.probes.columns) == ["kind", "topic", "task", "text"] and len(d.probes) == 16
    assert list(d.probes["kind"]) == ["harmful"] * 8 + ["benign"] * 8
    assert list(d.examples.columns) == ["prompt", "helpful", "safe"] and len(d.examples) == 4
    assert d.judge == "organism_exact"
    model, _ = load_checkpoint(organism["root"] / "history" / "safe")
    assert d.n_params == sum(p.numel() for p in model.parameters())


def test_describe_refuses_checkpoints_inside_its_output(organism):
    paths = Paths(organism["root"])  # data/history would hold nothing; point history at hf/
    cfg = hf_cfg(organism["files"])
    inside = types.SimpleNamespace(history=organism["root"] / "hf", metrics=paths.metrics)
    with pytest.raises(ConfigError, match="hf.witness_dir: .* lies inside"):
        hf.describe_checkpoints(cfg, inside, "cpu")


def test_checkpoint_arch_reads_nested_text_configs(tmp_path):
    """Multimodal configs nest the language model's shape under text_config."""
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llava", "text_config": {"hidden_size": 64, "num_hidden_layers": 3,
                                               "vocab_size": 100}}))
    arch = hf_inputs.checkpoint_arch(tmp_path)
    assert arch == {"model_type": "llava", "hidden_size": 64, "n_layer": 3, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps({"n_embd": 8, "text_config": "odd"}))
    with pytest.raises(ConfigError, match="config.json: no n_layer"):
        hf_inputs.checkpoint_arch(tmp_path)
