"""scripts/state_sizes.py (the README's state-size table) runs from configs alone, and its numbers
follow from the layouts: a spot check by hand on two rows."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def test_state_sizes_table(capsys):
    import state_sizes

    rows = {name: (fixed, per_1k) for name, _, _, fixed, per_1k in state_sizes.main()}
    assert "| tiiuae/falcon-mamba-7b |" in capsys.readouterr().out
    # falcon-mamba-7b: 64 layers x (conv 8192 x 4 + ssm 8192 x 16) float32, no attention
    assert rows["tiiuae/falcon-mamba-7b"] == (64 * 8192 * (4 + 16) * 4, 0)
    # granite-4.0-h-tiny: 36 Mamba-2 layers (conv (3072 + 2*128) x 4, ssm 48 x 64 x 128) and 4 attention
    # layers of 4 KV heads x 128 (keys and values), plus a position and a bias per token
    fixed, per_1k = rows["ibm-granite/granite-4.0-h-tiny"]
    assert fixed == 36 * ((3072 + 256) * 4 + 48 * 64 * 128) * 4
    assert per_1k == 1000 * (4 * 4 * 128 * 2 * 4 + 8 + 4)
