"""skillsoup.models.graphs: the static-buffer decode and sequence runners. On CPU they run their body
without a graph (``capture=False``) and must equal the eager path exactly; on CUDA the captured
graph must equal the same body run eagerly, token for token."""

from __future__ import annotations

import pytest
import torch

from skillsoup import load_model
from skillsoup.errors import GenerationError, StateMismatchError
from skillsoup.models.graphs import DecodeGraph, Graphs, SequenceGraph
from skillsoup.states.state import SkillState


@pytest.fixture(scope="module", params=["mamba", "mamba2"])
def model(request, mamba_dir, mamba2_dir):
    return load_model(mamba_dir if request.param == "mamba" else mamba2_dir, impl="ref")


def _rows(model, n_rows: int, seed: int = 0) -> SkillState:
    """n_rows different injected states: each row read its own demonstrations."""
    g = torch.Generator().manual_seed(seed)
    states = [model.capture(torch.randint(3, model.vocab_size, (1, 5 + 3 * r), generator=g)) for r in range(n_rows)]
    return SkillState.cat(states)


def test_decoder_equals_eager_step_token_for_token(model):
    state = _rows(model, 3)
    decoder = DecodeGraph(model, 3, capture=False)
    decoder.load(state)
    tokens = torch.tensor([5, 6, 7])
    eager_state = state
    for _ in range(6):
        want, eager_state = model.step(tokens, eager_state)
        got, greedy = decoder.step(tokens)
        assert torch.equal(got, want), "static-buffer step must equal StateModel.step bitwise"
        assert torch.equal(greedy, want.argmax(-1))
        assert len(set(greedy.tolist())) > 1 or len(set(map(tuple, want.tolist()))) == 3, "rows must differ"
        tokens = greedy.clone()
    after = decoder.snapshot()
    assert torch.equal(after.fixed, eager_state.fixed)
    assert after.n_tokens == eager_state.n_tokens


def test_decoder_rows_are_independent_and_load_row_replaces_one(model):
    state = _rows(model, 2, seed=1)
    decoder = DecodeGraph(model, 2, capture=False)
    decoder.load(state)
    fresh = model.capture([3, 4, 5, 6])
    decoder.load_row(1, fresh)
    logits, _ = decoder.step([8, 8])
    want0, _ = model.step([8], state.rows([0]))
    want1, _ = model.step([8], fresh)
    # one row against a batch of two: the matmuls may round differently, so close, not bitwise
    torch.testing.assert_close(logits[0], want0[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[1], want1[0], rtol=1e-5, atol=1e-5)
    assert decoder.n_tokens == [state.n_tokens[0] + 1, fresh.n_tokens[0] + 1]


def test_decoder_refuses_a_state_of_another_shape(model):
    decoder = DecodeGraph(model, 2, capture=False)
    with pytest.raises(GenerationError):
        decoder.step([1, 1])  # nothing loaded
    with pytest.raises(StateMismatchError):
        decoder.load(_rows(model, 3))


@pytest.mark.parametrize("length", [1, 5, 16])
def test_padded_sequence_equals_forward(model, length):
    """A 16-token graph reading fewer tokens: padded tokens leave the state exactly as it was."""
    start = _rows(model, 2, seed=2)
    ids = torch.randint(3, model.vocab_size, (2, length), generator=torch.Generator().manual_seed(length))
    runner = SequenceGraph(model, 2, 16, capture=False)
    logits, after = runner.run(ids, start)
    want, want_state = model.forward_with_grad(ids, start, logits="last")
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after.fixed, want_state.fixed, rtol=1e-5, atol=1e-6)
    assert after.n_tokens == want_state.n_tokens
    logits0, _ = runner.run(ids, None)  # from the start of text
    torch.testing.assert_close(logits0, model.forward_with_grad(ids, None, logits="last")[0], rtol=1e-5, atol=1e-5)


def test_model_routes_forward_and_generate_through_the_runners(mamba_dir):
    eager = load_model(mamba_dir, impl="ref")
    static = load_model(mamba_dir, impl="ref")
    static.use_graphs = True  # on CPU: the same static buffers, no graph
    state = eager.capture([5, 9, 11, 3])
    assert static.graphs() is not None and eager.graphs() is None
    for logits in ("last", "none"):
        got, got_state = static.forward([7, 8, 9], state, logits=logits)
        want, want_state = eager.forward([7, 8, 9], state, logits=logits)
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_state.fixed, want_state.fixed, rtol=1e-5, atol=1e-6)
    assert static.graphs()._sequences, "forward went through a sequence runner"
    want_ids = list(eager.generate_ids([4, 5], state, max_new_tokens=12, stop_ids=()))
    got_ids = list(static.generate_ids([4, 5], state, max_new_tokens=12, stop_ids=()))
    assert got_ids == want_ids
    assert static.graphs()._decoders[1], "generate went through a decoder"


def test_interleaved_generations_get_their_own_decoders(mamba_dir):
    model = load_model(mamba_dir, impl="ref")
    model.use_graphs = True
    a, b = model.capture([5, 6, 7]), model.capture([20, 30])
    want_a = list(model.generate_ids([4], a, max_new_tokens=8, stop_ids=()))
    want_b = list(model.generate_ids([4], b, max_new_tokens=8, stop_ids=()))
    gen_a, gen_b = model.generate_ids([4], a, max_new_tokens=8, stop_ids=()), model.generate_ids(
        [4], b, max_new_tokens=8, stop_ids=())
    got_a, got_b = [], []
    for ta, tb in zip(gen_a, gen_b):  # the two generations alternate steps
        got_a.append(ta)
        got_b.append(tb)
    assert got_a == want_a and got_b == want_b
    assert len(model.graphs()._decoders[1]) == 2


def test_buckets():
    graphs = Graphs.__new__(Graphs)
    graphs.buckets = (4, 8, 16)
    assert [graphs.bucket(n) for n in (1, 4, 5, 16, 17)] == [4, 4, 8, 16, None]


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_cuda_graph_decode_equals_eager_token_for_token(arch, mamba_dir, mamba2_dir):
    """Greedy decoding of rows with different injected states: the replayed graph and the same step
    run eagerly (the kernels, no graph) agree token for token, and both follow StateModel.step."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    model = load_model(mamba_dir if arch == "mamba" else mamba2_dir, device="cuda", impl="triton")
    state = _rows(model, 4, seed=3)
    graph, eager = DecodeGraph(model, 4, capture=True), DecodeGraph(model, 4, capture=False)
    assert graph.graph is not None
    graph.load(state)
    eager.load(state)
    tokens = torch.tensor([5, 6, 7, 8], device="cuda")
    ref_state = state
    for _ in range(16):
        logits_g, greedy_g = graph.step(tokens)
        logits_e, greedy_e = eager.step(tokens)
        ref_logits, ref_state = model.step(tokens, ref_state)
        assert torch.equal(greedy_g, greedy_e), "graph replay must pick the tokens eager picks"
        torch.testing.assert_close(logits_g, logits_e, rtol=0, atol=0)
        torch.testing.assert_close(logits_g, ref_logits, rtol=1e-4, atol=1e-4)
        tokens = greedy_g.clone()


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_cuda_sequence_graph_equals_the_eager_kernels(arch, mamba_dir, mamba2_dir):
    """A captured 16-token graph reading 1, 7 and 16 tokens from injected states: the same logits
    and state as the kernels run eagerly on exactly those tokens."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    model = load_model(mamba_dir if arch == "mamba" else mamba2_dir, device="cuda", impl="triton")
    model.use_graphs = False  # model.forward: the kernels, eagerly
    start = _rows(model, 2, seed=4)
    runner = SequenceGraph(model, 2, 16, capture=True)
    assert runner.graph is not None
    for length in (1, 7, 16):
        ids = torch.randint(3, model.vocab_size, (2, length), generator=torch.Generator().manual_seed(length)).cuda()
        logits, after = runner.run(ids, start)
        want, want_state = model.forward(ids, start, logits="last")
        torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(after.fixed, want_state.fixed, rtol=1e-4, atol=1e-5)


def test_a_failed_capture_falls_back_to_the_eager_path(mamba_dir, monkeypatch, caplog):
    import skillsoup.models.graphs as graphs_module

    model = load_model(mamba_dir, impl="ref")
    model.use_graphs = True
    state = model.capture([5, 6, 7])
    want = list(load_model(mamba_dir, impl="ref").generate_ids([4], state, max_new_tokens=6, stop_ids=()))

    def broken(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs_module, "DecodeGraph", broken)
    monkeypatch.setattr(graphs_module, "SequenceGraph", broken)
    with caplog.at_level("WARNING"):
        got = list(model.generate_ids([4], state, max_new_tokens=6, stop_ids=()))
    assert got == want
    assert model.graphs() is None and "not permitted" in model._graphs.failed
    assert "CUDA graph capture failed" in caplog.text
