"""Rows of bench_gpu.py for the runtime at hardware speed (issue 14): CUDA-graph decode at batch 1, 8
and 32, capture and short prefill through the length-bucket graphs, launches per decoded token, the
end-to-end answer from banked states, and a sweep of the Mamba-1 scan's tile length.

Every function returns rows (measurement, shape, ours, baseline, ratio, goal) and runs on CPU too
(``--dry-run``: the same static buffers without graphs, through the Triton interpreter).
"""

from __future__ import annotations

import contextlib
import time

import torch

GOALS = {  # issue 14, H200, bf16 weights, fp32 states, batch 1 unless said
    "mamba-130m": {"decode": 1000, "ttft_ms": 3.0, "capture_ms": 4.0},
    "mamba-1.4b": {"decode": 600, "ttft_ms": 6.0, "capture_ms": 15.0, "batch32": 10000},
    "mamba-2.8b": {"decode": 350},
}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device, reps: int, inner: int = 1, warmup: int = 1) -> float:
    """Median seconds per call of ``fn`` over ``reps`` timings of ``inner`` back-to-back calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        samples.append((time.perf_counter() - start) / inner)
    samples.sort()
    return samples[len(samples) // 2]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def goal(name: str, key: str, fmt: str) -> str:
    value = GOALS.get(name, {}).get(key)
    return fmt.format(value) if value is not None else ""


@contextlib.contextmanager
def graphs_off(model):
    """The eager path for a baseline: no graphs while inside."""
    saved = model.use_graphs
    model.use_graphs = False
    try:
        yield
    finally:
        model.use_graphs = saved


def _decoder_speed(model, state, steps: int, device, reps: int) -> float:
    """Seconds per step of a decoder fed its own greedy tokens (no host round trip per step)."""
    graphs = model.graphs()
    with graphs.decoder(state.batch_size) as decoder:
        decoder.load(state)
        tokens = torch.full((state.batch_size,), 5, dtype=torch.long, device=device)

        def run():
            nonlocal tokens
            for _ in range(steps):
                tokens = decoder.step(tokens)[1]

        return measure(run, device, reps) / steps


def _eager_speed(model, state, steps: int, device, reps: int) -> float:
    tokens = torch.full((state.batch_size,), 5, dtype=torch.long, device=device)

    def run():
        nonlocal tokens, state
        for _ in range(steps):
            logits, state = model.step(tokens, state)
            tokens = logits.argmax(-1)

    return measure(run, device, reps) / steps


def decode_rows(name, model, demos, args, device) -> list[tuple]:
    """Batch 1 (per token after an 8-token prompt, through generate: what a user gets) and batches of
    rows with different injected states (the decoder alone, tokens/s over all rows)."""
    rows = []
    state = model.capture(demos[:, :-8])
    head = demos[:, -8:]
    n_new = args.decode_tokens

    def generate(k):
        return list(model.generate_ids(head, state, max_new_tokens=k, stop_ids=()))

    def per_token():
        return (measure(lambda: generate(n_new), device, args.reps) - measure(lambda: generate(1), device, args.reps)) / (
            n_new - 1)

    fast = per_token()
    with graphs_off(model):
        eager = per_token()
    rows.append((f"decode tok/s, batch 1 (generate, {n_new} new tokens)", name, f"{1 / fast:.0f} tok/s",
                 f"{1 / eager:.0f} tok/s eager", f"{eager / fast:.1f}x", goal(name, "decode", ">= {} tok/s")))
    steps = max(2, n_new // 2)
    if model.graphs() is None:
        return rows + [graphs_failed(name, model)]
    for b in args.batches:
        g = torch.Generator().manual_seed(b)
        batch_state = model.capture(torch.randint(3, model.vocab_size, (b, min(64, demos.shape[1])), generator=g).to(device))
        per_step = _decoder_speed(model, batch_state, steps, device, args.reps)
        with graphs_off(model):
            eager_step = _eager_speed(model, batch_state, steps, device, args.reps)
        rows.append((f"decode tok/s, batch {b} (rows with different states, decoder)", name,
                     f"{b / per_step:.0f} tok/s", f"{b / eager_step:.0f} tok/s eager", f"{eager_step / per_step:.1f}x",
                     goal(name, "batch32", ">= {} tok/s") if b == 32 else ""))
    return rows


def capture_rows(name, model, demos, args, device) -> list[tuple]:
    t_graph = measure(lambda: model.capture(demos), device, args.reps)
    with graphs_off(model):
        t_eager = measure(lambda: model.capture(demos), device, args.reps)
    return [(f"capture {demos.shape[1]} tokens (length-bucket graph vs eager)", name, ms(t_graph), ms(t_eager),
             f"{t_eager / t_graph:.1f}x", goal(name, "capture_ms", "<= {} ms"))]


def graphs_failed(name, model) -> tuple:
    why = model._graphs.failed if model._graphs is not None else "graphs are off"
    return ("CUDA graphs: capture FAILED, the rows above ran eagerly", name, why, "", "", "captures")


def launch_rows(name, model, state, device) -> list[tuple]:
    """GPU operations and host-side launches for one decoded token: eager step vs graph replay."""
    from torch.profiler import ProfilerActivity, profile

    if model.graphs() is None:
        return [graphs_failed(name, model)]

    def count(fn):
        fn()  # warm
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            fn()
            sync(device)
        events = prof.events()
        on_gpu = sum(1 for e in events if str(e.device_type).endswith("CUDA"))
        launches = sum(1 for e in events if e.name.startswith("cu") and "Launch" in e.name)
        return on_gpu, launches

    token = torch.tensor([5], device=device)
    with graphs_off(model):
        eager_gpu, eager_launch = count(lambda: model.step(token, state))
    with model.graphs().decoder(1) as decoder:
        decoder.load(state)
        graph_gpu, graph_launch = count(lambda: decoder.step(token))
    return [("GPU ops / host launches per decoded token (torch.profiler)", name,
             f"{graph_gpu} ops, {graph_launch} launches (graph)", f"{eager_gpu} ops, {eager_launch} launches (eager)",
             f"{eager_launch / max(graph_launch, 1):.0f}x fewer launches", "1 graph launch per token")]


def answer_rows(name, model, demos, args, device) -> list[tuple]:
    """mix 2 banked skill states + prefill the query + first token + decode: SkillSoup._generate's
    parts, on the model's device, with the states resident in a StateBank (hot) or coming from its
    pinned host tier (cold)."""
    from skillsoup.states.bank import StateBank, pin
    from skillsoup.states.mixing import mix

    half = min(32, demos.shape[1] // 2)
    host = [model.capture(demos[:, i * half:(i + 1) * half]).to(device="cpu") for i in range(2)]  # as read from files
    query = demos[:, -args.ttft_query_tokens:]
    bank = StateBank(device=device)
    parts: dict[str, float] = {}

    def answer(cold: bool):
        if cold:
            bank.clear()
            for i in range(2):  # the pinned tier holds them; the device tier does not
                bank.host.put((str(i), "h", "f"), pin(host[i]) if bank.staged else host[i])
        t0 = time.perf_counter()
        states = [bank.get((str(i), "h", "f"), lambda i=i: host[i]) for i in range(2)]
        mixed = mix(states, [0.6, 0.4])
        sync(device)
        t1 = time.perf_counter()
        state = model.capture(query[:, :-1], mixed)
        sync(device)
        t2 = time.perf_counter()
        first = None
        for _ in model.generate_ids(query[:, -1:], state, max_new_tokens=args.decode_tokens, stop_ids=()):
            if first is None:
                first = time.perf_counter()
        t3 = time.perf_counter()
        parts.update(mix=t1 - t0, prefill=t2 - t1, first=first - t2, decode=t3 - first, total=t3 - t0)

    rows = []
    for cold in (False, True):
        totals = []
        for _ in range(max(args.reps, 1) + 1):
            answer(cold)
            totals.append(dict(parts))
        p = sorted(totals[1:], key=lambda d: d["total"])[len(totals[1:]) // 2]
        ttft = p["mix"] + p["prefill"] + p["first"]
        rows.append((f"end-to-end answer, 2 skills {'from pinned host' if cold else 'resident'} + "
                     f"{query.shape[1]}-token query + {args.decode_tokens} tokens", name, ms(p["total"]),
                     f"load+mix {ms(p['mix'])}, prefill {ms(p['prefill'])}, first token {ms(p['first'])}, "
                     f"decode {ms(p['decode'])}", f"TTFT {ms(ttft)}", goal(name, "ttft_ms", "TTFT <= {} ms")))
    return rows


def tile_rows(name, model, demos, args, device) -> list[tuple]:
    """The Mamba-1 scan's tokens per tile (kernels/selective_scan.py TOKENS_PER_TILE) for a capture."""
    import importlib

    scan = importlib.import_module("skillsoup_kernels.selective_scan")
    saved, rows = scan.TOKENS_PER_TILE, []
    try:
        for tile in args.sweep_tiles:
            scan.TOKENS_PER_TILE = tile
            model._graphs = None  # a captured graph keeps the kernel it was captured with
            t_graph = measure(lambda: model.capture(demos), device, args.reps)
            with graphs_off(model):
                t_eager = measure(lambda: model.capture(demos), device, args.reps)
            rows.append((f"capture {demos.shape[1]} tokens, scan tile {tile} tokens", name, ms(t_graph),
                         f"{ms(t_eager)} eager", f"{t_eager / t_graph:.1f}x", goal(name, "capture_ms", "<= {} ms")))
    finally:
        scan.TOKENS_PER_TILE = saved
        model._graphs = None
    return rows
