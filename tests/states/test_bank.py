"""skillsoup.states.bank.StateBank: states on the model's device, LRU by bytes, a second tier of host
copies (pinned on CUDA) that serves reloads without the file, and mixing banked states."""

from __future__ import annotations

import pytest
import torch

from skillsoup.states.bank import StateBank, pin, to_device
from skillsoup.states.mixing import mix, mix_ref
from skillsoup.states.state import SkillState


def _state(seed: int, layers: int = 2, d: int = 6, n: int = 4) -> SkillState:
    g = torch.Generator().manual_seed(seed)
    return SkillState([torch.randn(1, d, 4, generator=g) for _ in range(layers)],
                      [torch.randn(1, d, n, generator=g) for _ in range(layers)], [5], "fp", "mamba")


def _loader(states, calls):
    def load(name):
        def inner():
            calls.append(name)
            return states[name]
        return inner
    return load


def test_bank_keeps_states_on_its_device_lru_by_bytes():
    states = {k: _state(i) for i, k in enumerate("abc")}
    size = states["a"].nbytes
    calls = []
    load = _loader(states, calls)
    bank = StateBank(max_bytes=2 * size, device="cpu")
    for name in ("a", "b", "a", "c"):  # c evicts b, the least recently used
        got = bank.get((name, "h", "fp"), load(name))
        assert got.device.type == "cpu" and torch.equal(got.fixed, states[name].fixed)
    assert calls == ["a", "b", "c"] and bank.hits == 1 and bank.loads == 3
    assert ("b", "h", "fp") not in bank and ("a", "h", "fp") in bank and bank.nbytes == 2 * size
    assert len(bank.host) == 0, "a CPU bank has no host tier by default"


def test_host_tier_serves_a_state_evicted_from_the_device_without_its_file():
    states = {k: _state(i) for i, k in enumerate("ab")}
    calls = []
    load = _loader(states, calls)
    bank = StateBank(max_bytes=states["a"].nbytes, device="cpu", host_bytes=10 * states["a"].nbytes)
    bank.get(("a", "h", "fp"), load("a"))
    bank.get(("b", "h", "fp"), load("b"))  # a leaves the device tier, stays on the host
    again = bank.get(("a", "h", "fp"), load("a"))
    assert calls == ["a", "b"], "the second read of a came from the host tier"
    assert torch.equal(again.fixed, states["a"].fixed) and bank.loads == 2
    bank.clear()
    assert len(bank) == 0 and len(bank.host) == 0


def test_a_state_larger_than_the_budget_is_returned_not_kept():
    big = _state(0, layers=8)
    bank = StateBank(max_bytes=100, device="cpu")
    assert torch.equal(bank.get(("big", "h", "fp"), lambda: big).fixed, big.fixed)
    assert len(bank) == 0


def test_banked_states_mix_into_a_preallocated_state():
    states = [_state(i) for i in range(3)]
    bank = StateBank(device="cpu")
    banked = [bank.get((str(i), "h", "fp"), lambda s=s: s) for i, s in enumerate(states)]
    out = _state(9)
    got = mix(banked, [0.5, 0.3, 0.2], out=out)
    assert got is out
    assert torch.allclose(out.fixed, mix_ref(states, [0.5, 0.3, 0.2]).fixed, atol=1e-6)


@pytest.mark.gpu
def test_cuda_bank_stages_through_pinned_memory_and_mixes_on_the_device():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    states = [_state(i) for i in range(3)]
    assert pin(states[0]).fixed.is_pinned()
    bank = StateBank(device="cuda")
    banked = [bank.get((str(i), "h", "fp"), lambda s=s: s) for i, s in enumerate(states)]
    assert all(s.device.type == "cuda" for s in banked)
    assert all(bank.host.lookup((str(i), "h", "fp")).fixed.is_pinned() for i in range(3))
    out = to_device(_state(9), torch.device("cuda"))
    mix(banked, [0.5, 0.3, 0.2], out=out)
    torch.testing.assert_close(out.fixed.cpu(), mix_ref(states, [0.5, 0.3, 0.2]).fixed, rtol=1e-6, atol=1e-6)
