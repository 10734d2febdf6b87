"""The hf preset's inputs, checked from config and JSON files alone before any weight loads.

Inputs (params.yaml, `hf:`): witness_dir (a helpful-only checkpoint, theta_H), safe_dir (the
aligned model fine-tuning starts from, theta_S), train_jsonl ({"prompt", "response"} lines of
benign fine-tuning data), harmful_probes_jsonl and benign_probes_jsonl ({"prompt"} lines,
extra keys allowed). Weights load from safetensors only, offline, without remote code.
"""

from __future__ import annotations

import json
import math
import re
import struct
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
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit on its JSON header
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")
LAYER_INDEX = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


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


def safetensors_header(path: Path) -> dict:
    """The tensors' dtypes, shapes and offsets, from a safetensors file's header alone; the
    header and every offset are checked against the file's size (truncation shows here)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConfigError(f"{path}: not a safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise ConfigError(f"{path}: not a safetensors file (a header of {n} bytes in a "
                              f"file of {size}): garbage or truncated")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: not a safetensors file (its header is not a JSON object)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    data = size - 8 - n
    for name, t in tensors.items():
        try:
            begin, end = t["data_offsets"]
            width = DTYPE_BYTES[t["dtype"]] * math.prod(t["shape"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if not 0 <= begin <= end <= data or end - begin != width:
            raise ConfigError(f"{path}: tensor {name!r} lies at bytes {begin}..{end} of {data}, "
                              f"needs {width}: the file is truncated or corrupt")
    if not tensors:
        raise ConfigError(f"{path}: holds no tensors")
    return tensors


def check_weights(path: Path, arch: dict) -> None:
    """Every safetensors header parses, and the weights have config.json's shape: the
    embedding is vocab_size x hidden_size and the layers number n_layer."""
    tensors: dict = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update({k: (file, v["shape"]) for k, v in safetensors_header(file).items()})
    emb = [k for k in tensors if k.endswith(EMBEDDINGS)]
    conf = path / "config.json"
    if emb:
        file, shape = tensors[emb[0]]
        want = [arch["vocab_size"], arch["hidden_size"]]
        if arch["vocab_size"] is not None and shape != want:
            raise ConfigError(f"{file}: {emb[0]} has shape {shape}, but {conf} says "
                              f"vocab_size x hidden_size = {want}")
    layers = {int(m.group(1)) for k in tensors if (m := LAYER_INDEX.search(k))}
    if layers and max(layers) + 1 != arch["n_layer"]:
        raise ConfigError(f"{path}: the weights hold {max(layers) + 1} layers, but {conf} "
                          f"says {arch['n_layer']}")


def check_model_type(path: Path, arch: dict) -> None:
    """config.json's model_type is a causal language model that transformers ships."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kind = arch["model_type"]
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError(f"{path / 'config.json'}: model_type {kind!r} is not a causal "
                          "language model that transformers ships (remote code is not run)")


def check_tokenizer(path: Path) -> None:
    """tokenizer.json (when present) and tokenizer_config.json parse."""
    conf = path / "tokenizer_config.json"
    if conf.is_file():
        try:
            if not isinstance(json.loads(conf.read_text(encoding="utf-8")), dict):
                raise ConfigError(f"{conf}: expected a JSON object")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{conf}: not valid JSON ({e})") from None
    fast = path / "tokenizer.json"
    if fast.is_file():
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(fast))
        except Exception as e:  # the Rust parser raises its own exception type
            raise ConfigError(f"{fast}: not a valid tokenizer ({e})") from None


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
        arch = checkpoint_arch(path)
        check_model_type(path, arch)
        check_weights(path, arch)
        check_tokenizer(path)
    except ConfigError as e:
        raise ConfigError(f"hf.{field}: {e}") from None
    return arch


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
