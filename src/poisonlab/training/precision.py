"""Which floating-point precision a run computes in, chosen from the hardware when it starts.

A recipe's ``precision`` is ``auto``, ``bf16`` or ``fp32``. ``auto`` resolves per device:

- CUDA: bf16 autocast (Ampere and later compute it natively; no loss scaling, unlike fp16).
- CPU: bf16 only where the CPU computes it natively — AVX512_BF16 or AMX-BF16 on x86-64, the BF16
  extension on Arm — as PyTorch's own cpuinfo reports it (``torch.cpu.get_capabilities()``).
  Otherwise fp32. (oneDNN's ``_is_mkldnn_bf16_supported`` is no test of speed: it is true on any
  AVX-512 CPU, where bf16 is emulated.) oneDNN's own cap is honoured too: with
  ``ONEDNN_MAX_CPU_ISA`` at an ISA without bf16 (AVX2, AVX512_CORE, …) its kernels emulate bf16
  even on a CPU that has the units, so ``auto`` picks fp32. Setting
  ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` makes a bf16 machine behave like an AVX2-only one
  (measured: the smallcnn bf16 step 12× slower, fp32 unchanged), which is how the README's
  "without bf16" timings were taken.

Why not bf16 everywhere: on a CPU without bf16 units oneDNN emulates it, and a bf16-autocast
training step of smallcnn was measured 8–10× slower than fp32 on an AVX2-only AMD EPYC
(1.9–2.0 s vs 0.2–0.28 s a batch of 128, one thread); with AVX512_BF16 the same step is ~1.45×
faster than fp32. An explicit ``bf16`` is honoured everywhere, with one warning on such a CPU.

The resolved value (``bf16`` or ``fp32``) is what a run records (``metrics.json``'s
``precision``, MLflow's ``precision_resolved``), so runs made on two machines can be told apart.
``benchmarks/precision.py`` prints what ``auto`` picks here and the time a step of each.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")
# Measured on an AVX2-only AMD EPYC (smallcnn, batch 128, one thread); said in the warning.
EMULATED_BF16_SLOWDOWN = "8-10x"
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below AVX512_CORE_BF16: its kernels emulate bf16 under them.
ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware: AVX512_BF16 or AMX-BF16 on x86-64, BF16 on Arm."""
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    if isa_cap in ONEDNN_ISAS_WITHOUT_BF16:
        return False
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(flag, False) for flag in ("avx512_bf16", "amx_bf16", "bf16"))


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """A recipe's ``precision`` (auto | bf16 | fp32) → what runs on ``device``: ``bf16`` or ``fp32``."""
    device_type = torch.device(device).type
    if precision == "fp32":
        return "fp32"
    if precision == "bf16":
        if device_type == "cpu" and not cpu_has_native_bf16():
            _warn_emulated_bf16()
        return "bf16"
    if precision == "auto":
        if device_type == "cuda" or (device_type == "cpu" and cpu_has_native_bf16()):
            return "bf16"
        return "fp32"
    raise ValueError(f"precision: unknown '{precision}'; allowed: {', '.join(PRECISIONS)}")


@functools.cache
def _warn_emulated_bf16() -> None:
    # Once a process: a job evaluates many times, the warning is about the whole run.
    logger.warning(
        "precision bf16 asked for on a CPU without native bf16 (no AVX512_BF16 or AMX): it is emulated "
        "and a training step is about %s slower than fp32; 'precision: auto' would pick fp32 here",
        EMULATED_BF16_SLOWDOWN,
    )
