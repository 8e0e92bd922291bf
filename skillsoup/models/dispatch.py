"""Choose the operator implementation once per model: ``impl="auto" | "ref" | "cpu" | "triton"``.

``ref`` is the pure-PyTorch path in ``ops.py`` (always there, any device). ``cpu`` runs the fused C
kernels of ``cpu_ops.py`` (built at first use with the system compiler; no-grad inference only,
autograd calls go to ``ref``). ``triton`` runs the kernels in ``skillsoup_kernels``. ``auto`` takes
Triton on CUDA when it imports, the C kernels on CPU when they build, and ``ref`` otherwise, saying
why in the log once.
"""

from __future__ import annotations

import logging
import types

import torch

from skillsoup.errors import KernelUnavailableError
from skillsoup.models import ops

log = logging.getLogger(__name__)

IMPLS = ("auto", "ref", "cpu", "triton")
INSTALL_HINT = (
    "install the GPU extra on a CUDA machine: MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE "
    "pip install --no-build-isolation -e .[gpu]  (or just `pip install triton` for the Triton kernels)"
)

OP_NAMES = ("causal_conv1d", "selective_scan", "selective_state_update", "ssd_scan", "ssd_state_update")


def op_namespace(name: str, source, **extra) -> types.SimpleNamespace:
    """The namespace the mixers call: ``source``'s functions named in OP_NAMES, plus ``extra``."""
    return types.SimpleNamespace(name=name, **{op: getattr(source, op) for op in OP_NAMES}, **extra)


REF_OPS = op_namespace("ref", ops)


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


_warned: set[str] = set()


def _cpu_ops():
    """The fused C kernel namespace, or the reason it cannot run. Besides the fields of REF_OPS
    it has the mixers' fused decode steps (``mamba1.step`` / ``mamba2.step`` look for them) and the
    whole-stack decode plan (``StackBackend.step`` looks for it)."""
    from skillsoup.models import cpu_decode, cpu_ops, cpu_steps

    ok, why = cpu_ops.available()
    if not ok:
        return None, why
    namespace = op_namespace("cpu", cpu_ops, mamba1_step=cpu_steps.mamba1_step, mamba2_step=cpu_steps.mamba2_step,
                             decode_plan=cpu_decode.DecodePlan.build)
    return namespace, ""


def _fall_back(why: str) -> None:
    """A missing fast path is worth one warning per process and reason, not one per model."""
    if why not in _warned:
        _warned.add(why)
        log.warning("using the pure-PyTorch ops on CPU: %s", why)


def resolve(impl: str, device: torch.device):
    """-> (name, ops namespace). Logs the choice once per model."""
    if impl not in IMPLS:
        raise KernelUnavailableError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "ref":
        log.info("using the pure-PyTorch reference ops on %s", device)
        return "ref", REF_OPS
    on_cpu = torch.device(device).type == "cpu"
    if impl == "cpu" or (impl == "auto" and on_cpu):
        if not on_cpu:
            raise KernelUnavailableError(f"impl='cpu' needs the model on the CPU, it is on {device}")
        cpu_namespace, why = _cpu_ops()
        if cpu_namespace is not None:
            log.info("using the fused C kernels on %s", device)
            return "cpu", cpu_namespace
        if impl == "cpu":
            raise KernelUnavailableError(f"impl='cpu' cannot run: {why}")
        _fall_back(why)
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
