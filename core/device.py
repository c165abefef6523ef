"""Where the model runs and in what precision.

``auto`` prefers CUDA, then Apple's MPS, then the CPU. Reduced precision is chosen per device:
bf16 where the hardware computes it natively (CUDA since Ampere, CPUs with AVX-512 BF16 or AMX),
fp16 with loss scaling on older GPUs, fp32 elsewhere, so the same config is fast everywhere
without changing what the model computes beyond rounding.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError


def available_devices() -> list[str]:
    """Device names this machine can use, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def pick_device(preference: str = "auto") -> torch.device:
    """The device for ``preference`` (auto|cpu|cuda|mps); a clear error if it is missing."""
    found = available_devices()
    if preference == "auto":
        return torch.device(found[0])
    if preference not in found:
        raise UserError(
            f"train_params.device is '{preference}' but this machine has no {preference.upper()} "
            f"device; available: {', '.join(found)}. Set device to auto."
        )
    return torch.device(preference)


def describe(device: torch.device) -> str:
    """A human name for the device, e.g. 'cuda (NVIDIA H100 80GB HBM3)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads{', bf16' if cpu_has_bf16() else ''})"
    return device.type


@functools.cache
def cpu_model() -> str:
    """The processor's marketing name (Linux), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX) and torch
    may use them.

    The instructions alone are not enough: ``ONEDNN_MAX_CPU_ISA`` or ``ATEN_CPU_CAPABILITY``
    can cap what oneDNN and aten use (as on a machine set up to behave like an AVX2 one), and
    then bf16 runs emulated, many times slower than fp32.
    """
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    native = bool((probe and probe()) or (amx and amx()))
    return native and onednn_bf16() and torch.backends.cpu.get_cpu_capability() not in ("DEFAULT", "AVX2")


@functools.cache
def onednn_bf16() -> bool:
    """Whether oneDNN runs bf16 here (it refuses on CPUs, or ISA caps, without AVX-512)."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (None: plain fp32) and whether the loss needs scaling (fp16)."""

    dtype: torch.dtype | None
    scale_loss: bool = False

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA and CPUs, where convolutions and the UNet's attention run faster in it.

    cuDNN's tensor-core kernels and oneDNN's CPU kernels are written for NHWC; with NCHW each
    convolution reorders its input and output. The attention layers read pixels as (B, HW, C)
    tokens, which channels_last already is, so they need no copy either. MPS keeps NCHW.
    """
    return torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format


def pick_precision(preference: str, device: torch.device) -> Precision:
    """Resolve ``train_params.precision`` for ``device``."""
    if preference == "fp32":
        return Precision(None)
    if preference == "bf16":
        return Precision(torch.bfloat16)
    if preference == "fp16":
        return Precision(torch.float16, scale_loss=device.type == "cuda")
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return Precision(torch.bfloat16) if bf16 else Precision(torch.float16, scale_loss=True)
    if device.type == "cpu" and cpu_has_bf16():
        return Precision(torch.bfloat16)
    return Precision(None)
