"""Mamba-2 prefill from a given state: mamba-ssm's chunked SSD kernels when they import, else ours.

mamba-ssm's ``mamba_chunk_scan_combined`` accepts ``initial_states`` and returns the final states, so
on CUDA with mamba-ssm installed it is the fast path. Without it (or off CUDA) this runs
``skillsoup.models.ops.ssd_scan``, the exact chunked state-space-duality form in PyTorch (matmuls,
already GPU-friendly). mamba-ssm is detected once, never imported at module level: on a machine
without its CUDA extensions its import fails (see ENVIRONMENT.md).
"""

from __future__ import annotations

import functools
import logging

from skillsoup_kernels._common import needs_grad

from skillsoup.models import ops

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def mamba_chunk_scan():
    """mamba_ssm's ``mamba_chunk_scan_combined``, or None when it does not import. Decided once."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as exc:  # ImportError, or a broken CUDA extension raising OSError/RuntimeError
        log.info("mamba-ssm not usable (%s: %s); Mamba-2 prefill runs ops.ssd_scan", type(exc).__name__, exc)
        return None
    log.info("Mamba-2 prefill uses mamba-ssm's mamba_chunk_scan_combined")
    return mamba_chunk_scan_combined


def ssd_scan(
    x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
    initial_states=None, chunk_size=64,
):
    """Mamba-2 scan from ``initial_states``. Same signature as ops.ssd_scan.

    x [b, l, h, p], dt [b, l, h], A [h], B/C [b, l, g, n], D/dt_bias [h], initial_states [b, h, p, n]
    -> (y [b, l, h, p], final_states [b, h, p, n]) in float32.
    """
    fused = mamba_chunk_scan() if x.is_cuda and not needs_grad(x, dt, A, B, C, D, dt_bias, initial_states) else None
    if fused is None:
        return ops.ssd_scan(x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit, initial_states, chunk_size)
    y, final = fused(
        x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias,
        initial_states=initial_states.float() if initial_states is not None else None,
        dt_softplus=dt_softplus, dt_limit=tuple(dt_limit), return_final_states=True,
    )
    return y.float(), final.float()


def ssd_scan_ref(
    x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
    initial_states=None, chunk_size=64,
):
    """Specification of :func:`ssd_scan` (mirrors mamba_chunk_scan_combined and ops.ssd_scan): the
    recurrence one token at a time (``ops.ssd_scan_ref``)."""
    return ops.ssd_scan_ref(x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit, initial_states, chunk_size)
