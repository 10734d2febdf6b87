"""The hf preset's inputs, checked from config and JSON files alone before any weight loads.

Inputs (params.yaml, `hf:`): witness_dir (a helpful-only checkpoint, theta_H), safe_dir (the
aligned model fine-tuning starts from, theta_S), train_jsonl ({"prompt", "response"} lines of
benign fine-tuning data), harmful_probes_jsonl and benign_probes_jsonl ({"prompt"} lines,
extra keys allowed). Weights load from safetensors only, offline, without remote code.
"""

from __future__ import annotations

import json
from pathlib import Path

from gravrev.config.fields import ConfigError
from gravrev.config.load import Config

CHECKPOINTS = {"helpful": "witness_dir", "safe": "safe_dir"}  # checkpoint name -> hf field
JSONL_FIELDS = {
    "train_jsonl": ("prompt", "response"),
    "harmful_probes_jsonl": ("prompt",),
    "benign_probes_jsonl": ("prompt",),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
MIN_TRAIN_ROWS = 10


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> list[dict]:
    """JSON objects, one a line (blank lines skipped); `required` keys must be non-empty strings."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from None
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path}:{lineno}: not valid JSON ({e.msg}, column {e.colno})"
            ) from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        for key in required:
            if key not in row:
                raise ConfigError(f"{path}:{lineno}: missing field {key!r}")
            if not isinstance(row[key], str) or not row[key].strip():
                raise ConfigError(f"{path}:{lineno}: field {key!r} must be a non-empty string")
        rows.append(row)
    return rows


def checkpoint_arch(path: str | Path) -> dict:
    """model_type, hidden size, number of layers and vocab size, from config.json alone."""
    path = Path(path) / "config.json"
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from None
    if not isinstance(conf, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    if conf.get("auto_map"):
        raise ConfigError(
            f"{path}: has auto_map (custom model code); trust_remote_code is off, so only "
            "architectures that transformers ships are loaded"
        )
    text = conf.get("text_config")  # multimodal configs nest the language model's
    text = text if isinstance(text, dict) else {}

    def pick(*keys: str):
        for c in (conf, text):
            for k in keys:
                if c.get(k) is not None:
                    return c[k]
        return None

    arch = {
        "model_type": conf.get("model_type"),
        "hidden_size": pick("hidden_size", "n_embd"),
        "n_layer": pick("num_hidden_layers", "n_layer"),
        "vocab_size": pick("vocab_size"),
    }
    for key in ("hidden_size", "n_layer"):
        value = arch[key]
        if value is None:
            raise ConfigError(f"{path}: no {key} (hidden_size/n_embd, num_hidden_layers/n_layer)")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{path}: {key} must be a positive integer, got {value!r}")
    return arch


def _check_checkpoint(field: str, value: str | None) -> dict:
    if value is None:
        raise ConfigError(f"hf.{field}: required by the hf preset (a local checkpoint directory)")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"hf.{field}: {path}: no such directory")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"hf.{field}: {path}: no config.json (not a transformers checkpoint)"
        )
    require_safetensors(path, f"hf.{field}")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(f"hf.{field}: {path}: no tokenizer (none of {TOKENIZER_FILES})")
    try:
        return checkpoint_arch(path)
    except ConfigError as e:
        raise ConfigError(f"hf.{field}: {e}") from None


def require_safetensors(path: Path, name: str) -> None:
    """Weights load from safetensors only: pickled .bin/.pt files are never unpickled."""
    if not list(Path(path).glob("*.safetensors")):
        others = sorted(p.name for p in Path(path).glob("*") if p.suffix in (".bin", ".pt", ".pth"))
        found = f" (found {', '.join(others)})" if others else ""
        raise FileNotFoundError(
            f"{name}: {path}: no *.safetensors weights{found}; convert them "
            "to safetensors (pickled weights are not loaded)"
        )


def load_inputs(cfg: Config) -> dict:
    """Every check of validate_inputs; returns the checkpoints' arch and the JSONL rows."""
    hf = cfg.hf
    arch = {f: _check_checkpoint(f, getattr(hf, f)) for f in CHECKPOINTS.values()}
    w, s = arch["witness_dir"], arch["safe_dir"]
    for key in ("model_type", "hidden_size", "n_layer", "vocab_size"):
        if w[key] != s[key]:
            raise ConfigError(
                f"hf.safe_dir: {key} is {s[key]!r} in {hf.safe_dir} but "
                f"{w[key]!r} in hf.witness_dir {hf.witness_dir}; v_rev compares "
                "the two checkpoints, which need one architecture"
            )
    rows = {}
    for field, required in JSONL_FIELDS.items():
        value = getattr(hf, field)
        if value is None:
            raise ConfigError(f"hf.{field}: required by the hf preset (a local JSONL file)")
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"hf.{field}: {path}: no such file")
        try:
            rows[field] = read_jsonl(path, required)
        except ConfigError as e:
            raise ConfigError(f"hf.{field}: {e}") from None
    n_train = len(rows["train_jsonl"])
    if n_train < MIN_TRAIN_ROWS:
        raise ConfigError(
            f"hf.train_jsonl: {hf.train_jsonl} has {n_train} rows; need at least {MIN_TRAIN_ROWS}"
        )
    for field in ("harmful_probes_jsonl", "benign_probes_jsonl"):
        n = len(rows[field])
        if n < hf.min_probes:
            raise ConfigError(
                f"hf.{field}: {getattr(hf, field)} has {n} probes; hf.min_probes is {hf.min_probes}"
            )
    if cfg.world.n_probes < hf.min_probes:
        raise ConfigError(
            f"world.n_probes: {cfg.world.n_probes} is below hf.min_probes {hf.min_probes}"
        )
    probes = {r["prompt"] for f in ("harmful_probes_jsonl", "benign_probes_jsonl") for r in rows[f]}
    leaked = [r["prompt"] for r in rows["train_jsonl"] if r["prompt"] in probes]
    if leaked:
        raise ConfigError(
            f"hf.train_jsonl: {len(leaked)} training prompts are also probes "
            f"(e.g. {leaked[0]!r}); probes must be held out of training"
        )
    n_layer = s["n_layer"]
    if cfg.analysis.layer >= n_layer:
        raise ConfigError(
            f"analysis.layer: {cfg.analysis.layer} is out of range; the checkpoints "
            f"have {n_layer} layers (0..{n_layer - 1}, or -1 for the middle)"
        )
    return {"arch": s, **rows}


def validate_inputs(cfg: Config) -> None:
    """Check every hf input from config and JSON files alone (no weights), naming the field."""
    load_inputs(cfg)
