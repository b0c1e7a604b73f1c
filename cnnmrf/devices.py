"""Where the model runs: the device (CPU or CUDA) and the arithmetic precision (float32 or bfloat16)."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnnmrf.errors import CnnmrfError

if TYPE_CHECKING:  # torch is imported where it is used: the command line's choices (Device, Precision) load fast
    import torch

# CPU flags that mean bfloat16 matrix arithmetic runs in hardware: Intel AMX tiles, or AVX-512 BF16 dot products.
NATIVE_BF16_CPU_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")


class Device(str, enum.Enum):
    """Where to run (see resolve_device); under torchrun each process takes its LOCAL_RANK GPU."""

    auto = "auto"  # CUDA when available, else the CPU
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, enum.Enum):
    """Arithmetic of the part detector's convolutions (the spatial model, losses and decoding stay float32)."""

    auto = "auto"  # bf16 where the device computes it natively, else fp32
    fp32 = "fp32"
    bf16 = "bf16"


@dataclass(frozen=True)
class Resolved:
    """The precision chosen for a device, and why (for the run summary)."""

    dtype: torch.dtype  # torch.float32 or torch.bfloat16
    reason: str

    @property
    def name(self) -> str:
        """``fp32`` or ``bf16``."""
        import torch

        return "bf16" if self.dtype == torch.bfloat16 else "fp32"


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a torch device.

    Raises:
        CnnmrfError: an unknown name, or CUDA asked for without a GPU.
    """
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise CnnmrfError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CnnmrfError(f"--device {name} was asked for but no CUDA GPU is available")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise CnnmrfError(f"--device {name!r} is not a valid device ({err})") from err


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist, e.g. macOS)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bfloat16 matrix products in hardware, and what that was decided from."""
    if device.type == "cuda":
        import torch

        ok = torch.cuda.is_bf16_supported()
        return ok, f"CUDA GPU {'with' if ok else 'without'} bfloat16 support"
    found = sorted(cpu_flags() & set(NATIVE_BF16_CPU_FLAGS))
    if found:
        return True, f"CPU has {', '.join(found)}"
    neither = " nor ".join(NATIVE_BF16_CPU_FLAGS)
    return False, f"CPU has neither {neither} (bfloat16 would be emulated, several times slower)"


def resolve_precision(precision: Precision | str, device: torch.device, auto_bf16: bool = True) -> Resolved:
    """``auto`` becomes bf16 where ``device`` computes it natively, else fp32; fp32 and bf16 are taken as asked.

    ``auto_bf16`` False makes ``auto`` fp32 on every device: for commands whose answers must not depend on the machine
    (``predict`` and ``calibrate``: a bfloat16 scan changes which doubtful candidates it proposes).
    """
    import torch

    precision = Precision(precision)
    if precision is Precision.fp32:
        return Resolved(torch.float32, "asked for (--precision fp32)")
    if precision is Precision.bf16:
        return Resolved(torch.bfloat16, "asked for (--precision bf16)")
    if not auto_bf16:
        return Resolved(torch.float32, "auto: float32, so the answers are the same on every machine")
    native, why = native_bf16(device)
    return Resolved(torch.bfloat16 if native else torch.float32, f"auto: {why}")


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """bfloat16 autocast on ``device`` when ``dtype`` is bfloat16; a no-op for float32."""
    import torch

    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        yield
