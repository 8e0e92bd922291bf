"""Teacher-forced NLL: the length-grouped fast path equals one forward over prompt + target per row."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close

from skillsoup.errors import GenerationError
from skillsoup.models.scoring import forced_nll, forced_nll_ref


def _rows(model, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, model.vocab_size, (n,), generator=g).tolist() for n in lengths]


def test_forced_nll_equals_reference_with_mixed_lengths_and_states(model):
    prompts = _rows(model, [5, 9, 5, 1, 12], seed=1)  # two rows share a length, one prompt is a single token
    targets = _rows(model, [1, 4, 7, 4, 2], seed=2)  # a one-token target has no teacher-forced part
    demo = model.capture(_rows(model, [20], seed=3)[0])
    states = [None, demo, demo, None, model.capture(_rows(model, [7], seed=4)[0])]
    fast = forced_nll(model, prompts, targets, states)
    ref = forced_nll_ref(model, prompts, targets, states)
    assert_close("nll", torch.tensor(fast), torch.tensor(ref), 1e-5)
    assert len({round(v, 6) for v in fast}) == len(fast)  # rows are scored on their own


def test_forced_nll_reads_the_state(model):
    prompt, target = _rows(model, [6, 5], seed=5)
    zero = forced_nll(model, [prompt], [target], [None])[0]
    primed = forced_nll(model, [prompt], [target], [model.capture(_rows(model, [30], seed=6)[0])])[0]
    assert abs(zero - primed) > 1e-4


def test_forced_nll_checks_its_rows(model):
    with pytest.raises(GenerationError, match="one of each per row"):
        forced_nll(model, [[3]], [[4], [5]], [None])
    with pytest.raises(GenerationError, match="non-empty"):
        forced_nll(model, [[3]], [[]], [None])
    assert forced_nll(model, [], [], []) == []
