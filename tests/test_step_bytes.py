"""The faster training step keeps its bytes: against the plain step, and on another CPU path."""

import subprocess
import sys

import pytest
import smoke_training
import torch
from test_numerics import shell_env

from gravrev.organism.model import ACTIVATION
from gravrev.runtime.numerics import SWITCH
from gravrev.training.loop import IGNORE, right_padded

pytestmark = pytest.mark.slow  # trains the smoke organism several times


def masked_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The step's loss as it was: the attention mask always passed."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, target = logits[:, :-1].float(), batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE
    )


def per_tensor_adamw(model: torch.nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    """The optimizer as it was: AdamW's per-tensor loop."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=False)


def test_right_padded_tells_right_from_left_padding():
    assert right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert not right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    assert not right_padded(torch.tensor([[1, 0, 1]]))


def test_the_step_trains_the_same_bytes_as_the_masked_per_tensor_step(monkeypatch):
    ours = smoke_training.train_smoke_and_hash(seed=0, steps=20)
    monkeypatch.setattr(smoke_training, "lm_loss", masked_loss)
    monkeypatch.setattr(smoke_training, "make_optimizer", per_tensor_adamw)
    assert smoke_training.train_smoke_and_hash(seed=0, steps=20) == ours


TRAIN = """
import gravrev
import torch
from smoke_training import train_smoke_and_hash
torch.set_num_threads(1)
print(train_smoke_and_hash(seed=0, steps=20))
"""

# A shell that asks for no vector ISA and MKL's and oneDNN's own choices; never AVX-512, which
# an unpinned CPU without it cannot run (SIGILL).
OTHER_PATH = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "ALL"}


def test_the_fused_gelu_gives_the_same_bytes_whatever_cpu_path_the_shell_asks():
    assert ACTIVATION == "gelu_pytorch_tanh"
    envs = [shell_env(**{SWITCH: "1"}), shell_env(**OTHER_PATH, **{SWITCH: "1"})]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TRAIN],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in envs
    ]
    done = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    for rc, _, err in done:
        assert rc == 0, err[-2000:]
    assert done[0][1].strip() == done[1][1].strip()
