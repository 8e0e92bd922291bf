"""What every kernel wrapper shares: output allocation, the device check, the autograd fallback,
and the small Triton math helpers (softplus, silu) that mamba-ssm's kernels also inline.

Glossary: see ``skillsoup.models.ops`` (b batch, l tokens, d channels, n d_state, k conv width,
h heads, p head dim, g groups).
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

# Tests set this to float("nan"): every output a wrapper allocates is then pre-filled, so a kernel
# that leaves an element unwritten produces NaN and fails the comparison instead of passing by luck.
DEBUG_FILL: float | None = None


def new_output(shape, device, dtype=torch.float32) -> torch.Tensor:
    """A fresh contiguous output tensor (pre-filled with DEBUG_FILL when tests ask for it)."""
    out = torch.empty(tuple(shape), device=device, dtype=dtype)
    if DEBUG_FILL is not None:
        out.fill_(DEBUG_FILL)
    return out


# Triton decides at decoration time (when this package is imported) whether kernels are compiled or
# interpreted; this records that decision, so setting the variable later changes nothing here either.
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpreting() -> bool:
    """True when the kernels run through Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return _INTERPRETED


def on_device(device: torch.device):
    """Launch on the tensors' GPU, not the current one (as mamba-ssm's wrappers do)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def check_device(op: str, *tensors: torch.Tensor | None) -> torch.device:
    """All tensors on one device, and a device the kernels can run on. Returns that device."""
    present = [t for t in tensors if t is not None]
    device = present[0].device
    for t in present[1:]:
        if t.device != device:
            raise ValueError(f"{op}: all tensors must be on one device, got {device} and {t.device}")
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"{op}: the Triton kernel needs CUDA tensors (got {device}); use skillsoup.models.ops on CPU, "
            "or set TRITON_INTERPRET=1 before importing skillsoup_kernels to run it through the interpreter"
        )
    return device


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """The kernels are forward-only: with autograd recording, wrappers run the differentiable ops.py twin."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def pow2(n: int, floor: int = 1) -> int:
    """Smallest power of two >= max(n, floor): Triton block shapes must be powers of two."""
    return max(triton.next_power_of_2(max(int(n), 1)), floor)


@triton.jit
def log1p(y):
    """log(1 + y) accurate for tiny y (Kahan's trick; Triton has no portable log1p)."""
    u = 1.0 + y
    d = u - 1.0  # the part of y that survived rounding
    return tl.where(d == 0.0, y, tl.log(u) * (y / tl.where(d == 0.0, 1.0, d)))


@triton.jit
def softplus(x):
    """torch.nn.functional.softplus with its default threshold 20."""
    return tl.where(x > 20.0, x, log1p(tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def silu(x):
    return x * tl.sigmoid(x)
