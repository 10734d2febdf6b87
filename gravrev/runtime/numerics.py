"""Numeric pins: the same commit trains the same bytes on any x86-64 CPU with AVX2.

ATen's vectorised kernels, MKL and oneDNN each pick a code path from the host's instruction
set; different paths round differently, and thousands of training steps amplify the
difference. The pins fix every such choice (ATen and oneDNN at AVX2, MKL at its COMPATIBLE
branch, one thread), through environment variables that the libraries read once, on their
first use. So they must be set before torch runs its first operation: `import gravrev` does it.
This module imports no torch at the top.

MKL's AVX2 branch is Intel-only: on an AMD CPU MKL ignores it and picks its own path (AUTO),
and a fresh clone on an AMD EPYC trained other weights than the Intel-made reference (one
history's theta_S kept 75% of its latent content instead of 100%). COMPATIBLE is the one
branch MKL documents to give the same results on Intel and non-Intel processors; it costs
speed (its gemm is SSE2-level). Where MKL still reports another branch, check_pins warns.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import warnings
from pathlib import Path

SWITCH = "GRAVREV_NUMERIC_PINS"
# The shell's own values of the pinned variables, kept so that switching the pins off undoes them.
HOST_ENV = "GRAVREV_HOST_ENV"
CAPABILITY = "AVX2"

NUMERIC_PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    # COMPATIBLE: the same bits on Intel and AMD (MKL's CNR docs: AVX2 is an Intel-only branch);
    # STRICT: the same bits whatever the thread count.
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    # MKL's reproducibility conditions: no dynamic change of the thread count.
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
}

# mkl_cbwr.h's constants: the branches, and the STRICT flag or'ed into them.
_MKL_BRANCHES = {0: "OFF", 1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3"}
_MKL_BRANCHES |= {7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 12: "AVX512", 14: "AVX512_E1"}
_MKL_STRICT = 0x10000


def apply_pins(enabled: bool = True) -> None:
    """Set the pins in os.environ over the shell's values (or restore those) and record the choice.

    Children (pool workers, notebook kernels) inherit both the variables and the choice.
    """
    if enabled:
        if HOST_ENV not in os.environ:
            os.environ[HOST_ENV] = json.dumps({k: os.environ.get(k) for k in NUMERIC_PINS})
        os.environ.update(NUMERIC_PINS)
    elif HOST_ENV in os.environ:
        for key, value in json.loads(os.environ.pop(HOST_ENV)).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    os.environ[SWITCH] = "1" if enabled else "0"


def pins_enabled() -> bool:
    """Whether this process (and its children) run with the pins, as recorded in the environment."""
    return os.environ.get(SWITCH, "1") != "0"


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def mkl_cbwr_setting() -> str | None:
    """MKL's CNR setting in MKL_CBWR's spelling (e.g. "AVX2,STRICT"); None where it is unknown.

    Asks the MKL inside torch (mkl_cbwr_get(MKL_CBWR_ALL)); MKL reads MKL_CBWR once, on its
    first use, so a setting of OFF under the pins means MKL ran before them.
    """
    import torch

    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        get = ctypes.CDLL(str(lib)).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.restype = ctypes.c_int
    value = int(get(ctypes.c_int(-1)))
    branch = _MKL_BRANCHES.get(value & ~_MKL_STRICT, str(value & ~_MKL_STRICT))
    return branch + (",STRICT" if value & _MKL_STRICT else "")


def check_pins() -> None:
    """Raise if the pins are on but torch or MKL started before them (torch imported first)."""
    if not pins_enabled() or not _is_x86_64():
        return
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    mkl = mkl_cbwr_setting()
    if capability != CAPABILITY or mkl == "OFF":
        raise RuntimeError(
            f"numeric pins: torch runs at CPU capability {capability} (MKL_CBWR {mkl}), "
            f"not {CAPABILITY} with MKL_CBWR={NUMERIC_PINS['MKL_CBWR']}: torch ran before the "
            "pins were set. Import gravrev before torch (or, on a CPU without AVX2, set "
            f"{SWITCH}=0 / numeric_pins: false and give up bitwise reproduction across hosts)."
        )
    if mkl is not None and mkl != NUMERIC_PINS["MKL_CBWR"]:
        warnings.warn(
            f"numeric pins: MKL chose the CNR setting {mkl}, not {NUMERIC_PINS['MKL_CBWR']}; "
            "on this CPU, results may differ in the last bits from other hosts",
            RuntimeWarning,
            stacklevel=2,
        )


def pins_in_force() -> dict[str, str]:
    """For the provenance page: the pinned variables, torch's capability and thread count."""
    import torch

    report = {SWITCH: os.environ.get(SWITCH, "unset")}
    report |= {k: os.environ.get(k, "unset") for k in NUMERIC_PINS}
    mkl = mkl_cbwr_setting()
    report["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    report["torch_num_threads"] = str(torch.get_num_threads())
    report["mkl_cbwr_setting"] = mkl or "unknown"
    report["machine"] = platform.machine()
    return report
