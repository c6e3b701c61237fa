"""Mixed precision: bf16 matrix products over fp32 weights, where the chip has bf16 matrix units.

A CPU's fastest matrix unit is often not its fp32 one: on 2 threads a 2048² matmul runs 864 GFLOP/s
in bf16 against 203 in fp32 on an AMD EPYC with avx512_bf16, 1,078 against 183 on a Xeon with AMX
(bench/run.py measures it on every run). `runtime.precision: auto` therefore runs every model forward
(and so its backward) under `torch.autocast(bf16)` when the weights are fp32 and the chip has those
units: matmuls and attention in bf16, while the weights, the optimizer's states, the residual stream,
norms, softmaxes and every log-probability stay fp32 (the callers upcast logits before log-softmax).
Without the units bf16 is emulated and slower, so `auto` keeps fp32 there.

The resolved choice is a process setting, like torch's default dtype: `setup_runtime` sets it once
per stage, and the few places that run a model's forward (`srppo.models.logprobs`, the critic, the hf
engine, the reward model) enter `autocast(device)`.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

# x86 flags of bf16 matrix hardware (Linux /proc/cpuinfo names): Intel AMX tiles, AVX-512 BF16 dot products
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

_autocast_dtype: torch.dtype | None = None


def cpu_bf16_units(cpuinfo: str | None = None) -> list[str]:
    """The bf16 matrix units this CPU advertises (empty when none, or off Linux)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break  # every core lists the same flags
    return [f for f in CPU_BF16_FLAGS if f in flags]


def resolve_precision(precision: str, device: torch.device, weights: torch.dtype,
                      cpu_units: list[str] | None = None) -> torch.dtype | None:
    """The autocast dtype for `runtime.precision` on this device, or None for plain `weights` compute.

    'fp32': none. 'bf16': bf16 autocast (an error on a CPU without bf16 units, where it would be slow).
    'auto': bf16 when the weights are fp32 and the device has bf16 matrix units (CUDA with bf16 support,
    or a CPU with AMX / AVX-512 BF16). Weights already in bf16/fp16 (GPU presets) need no autocast."""
    if precision == "fp32" or weights != torch.float32:
        return None
    if device.type == "cuda":
        has_units = torch.cuda.is_bf16_supported()
    else:
        has_units = bool(cpu_bf16_units() if cpu_units is None else cpu_units)
    if precision == "bf16" and not has_units:
        raise ValueError(f"runtime.precision='bf16' but this {device.type.upper()} has no bf16 matrix units "
                         f"({' / '.join(CPU_BF16_FLAGS)} on CPU): bf16 would be emulated and slower; use 'auto'")
    return torch.bfloat16 if has_units else None


def set_autocast_dtype(dtype: torch.dtype | None) -> None:
    """This process's mixed-precision setting (`setup_runtime` calls it once per stage)."""
    global _autocast_dtype
    _autocast_dtype = dtype


def autocast_dtype() -> torch.dtype | None:
    return _autocast_dtype


@contextmanager
def full_precision():
    """Inside: no autocast, whatever `runtime.precision` resolved to (models loaded inside keep fp32 weights).
    For measurements, where bf16's rounding would be noise in the instrument rather than speed in training."""
    saved = _autocast_dtype
    set_autocast_dtype(None)
    try:
        yield
    finally:
        set_autocast_dtype(saved)


def autocast(device: torch.device | str):
    """The process's autocast for a forward on `device`, or a no-op context under fp32.

    Autocast keeps a cast copy of each trainable weight until the outermost context exits, so wrapping
    a whole generate() call casts the actor's weights once rather than at every decoded token."""
    device_type = device if isinstance(device, str) else device.type
    if _autocast_dtype is None:
        return nullcontext()
    return torch.autocast(device_type, dtype=_autocast_dtype)
