"""skillsoup's GPU kernels, importable as ``skillsoup_kernels`` (the source folder is ``kernels/``).

Every op has a Triton kernel and, beside it in the same module, a ``*_ref`` in PyTorch with the same
signature (the spec the tests compare against):

    mix.py                      mix_states                         fused weighted sum of K flat states
    selective_scan.py           selective_scan                     Mamba-1 prefill from a given state
    causal_conv1d.py            causal_conv1d                      depthwise conv continuing from its cache
    selective_state_update.py   selective_state_update             Mamba-1 decode step
    ssd_state_update.py         ssd_state_update                   Mamba-2 decode step
    ssd_scan.py                 ssd_scan                           Mamba-2 prefill (mamba-ssm when installed)
    decode_step.py              conv_step_, add_rms_norm, the       the in-place pieces of a decode step
                                state updates written in place      (what the CUDA graphs capture)

``model_ops`` is the namespace ``skillsoup.models.dispatch`` hands to the model backends on CUDA; it
has the fields of ``dispatch.REF_OPS`` and ``decode``, the in-place decode ops (``decode_ops``; the
PyTorch ones are ``skillsoup.models.step_ops.DECODE_REF``). Importing this package raises ImportError when triton is not
installed. On CPU the kernels run only through Triton's interpreter (TRITON_INTERPRET=1 set before
this import), which the tests use.
"""

from __future__ import annotations

import types

try:
    import triton  # noqa: F401
    import triton.language  # noqa: F401
except Exception as exc:  # a missing or broken triton: dispatch expects ImportError
    raise ImportError(
        f"skillsoup_kernels needs triton ({type(exc).__name__}: {exc}); install it with `pip install -e .[triton]`"
    ) from exc

from skillsoup_kernels.causal_conv1d import causal_conv1d, causal_conv1d_ref
from skillsoup_kernels.decode_step import add_rms_norm, add_rms_norm_ref, conv_step_, conv_step_ref, decode_ops
from skillsoup_kernels.mix import mix_states, mix_states_ref
from skillsoup_kernels.selective_scan import selective_scan, selective_scan_ref
from skillsoup_kernels.selective_state_update import selective_state_update, selective_state_update_ref
from skillsoup_kernels.ssd_scan import mamba_chunk_scan, ssd_scan, ssd_scan_ref
from skillsoup_kernels.ssd_state_update import ssd_state_update, ssd_state_update_ref

model_ops = types.SimpleNamespace(
    name="triton",
    causal_conv1d=causal_conv1d,
    selective_scan=selective_scan,
    selective_state_update=selective_state_update,
    ssd_scan=ssd_scan,
    ssd_state_update=ssd_state_update,
    decode=decode_ops,
)

__all__ = [
    "add_rms_norm", "add_rms_norm_ref", "causal_conv1d", "causal_conv1d_ref", "conv_step_", "conv_step_ref",
    "decode_ops", "mamba_chunk_scan", "mix_states", "mix_states_ref", "model_ops", "selective_scan", "selective_scan_ref",
    "selective_state_update", "selective_state_update_ref", "ssd_scan", "ssd_scan_ref",
    "ssd_state_update", "ssd_state_update_ref",
]
