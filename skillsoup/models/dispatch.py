"""Choose the operator implementation once per model: ``impl="auto" | "ref" | "triton"``.

``ref`` is the pure-PyTorch path in ``ops.py`` (always there, any device). ``triton`` runs the kernels
in ``skillsoup_kernels``; ``auto`` takes them only on CUDA when they import.
"""

from __future__ import annotations

import logging
import types

import torch

from skillsoup.errors import KernelUnavailableError
from skillsoup.models import ops

log = logging.getLogger(__name__)

IMPLS = ("auto", "ref", "triton")
INSTALL_HINT = (
    "install the GPU extra on a CUDA machine: MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE "
    "pip install --no-build-isolation -e .[gpu]  (or just `pip install triton` for the Triton kernels)"
)

REF_OPS = types.SimpleNamespace(
    name="ref",
    causal_conv1d=ops.causal_conv1d,
    selective_scan=ops.selective_scan,
    selective_state_update=ops.selective_state_update,
    ssd_scan=ops.ssd_scan,
    ssd_state_update=ops.ssd_state_update,
)


def _triton_ops():
    """The kernel namespace, or the reason it cannot run."""
    try:
        import skillsoup_kernels
    except ImportError as exc:  # triton missing or broken
        return None, f"skillsoup_kernels does not import ({exc})"
    kernel_ops = getattr(skillsoup_kernels, "model_ops", None)
    if kernel_ops is None:
        return None, "skillsoup_kernels has no model_ops"
    return kernel_ops, ""


def resolve(impl: str, device: torch.device):
    """-> (name, ops namespace). Logs the choice once per model."""
    if impl not in IMPLS:
        raise KernelUnavailableError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "ref":
        log.info("using the pure-PyTorch reference ops on %s", device)
        return "ref", REF_OPS
    on_cuda = torch.device(device).type == "cuda"
    kernel_ops, why = _triton_ops() if on_cuda or impl == "triton" else (None, "tensors are not on CUDA")
    if impl == "triton":
        if not on_cuda:
            raise KernelUnavailableError(f"impl='triton' needs the model on a CUDA device, it is on {device}")
        if kernel_ops is None:
            raise KernelUnavailableError(f"impl='triton' cannot run: {why}; {INSTALL_HINT}")
    if kernel_ops is not None:
        log.info("using Triton kernels on %s", device)
        return "triton", kernel_ops
    log.info("using the pure-PyTorch ops on %s (%s)", device, why)
    return "ref", REF_OPS
