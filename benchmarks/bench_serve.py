"""Serving benchmark: requests/s, tokens/s and time to first token of ``skillsoup serve`` with 1, 8
and 32 concurrent clients, against one client at a time, on the demo model on this CPU.

    python benchmarks/bench_serve.py                        # demo model, the bundled demo skills, MiniLM routing
    python benchmarks/bench_serve.py --registry DIR --levels 1,8,32 --per-client 8 --prefill steps

Each client sends streamed chat requests one after another (queries drawn from the demo skills'
held-out inputs, routed, or pinned to their skill with --pinned; greedy, max_tokens 64); time to
first token (TTFT) runs from sending a request to its first text chunk; tokens are each answer's
usage. The server runs in its own process (``skillsoup serve``, one torch thread unless --threads), as a user
starts it; the clients are one asyncio loop here.
Goal (issue 16): 32 clients >= 6x the tokens/s of one client at a time, p95 TTFT <= 1 s. The
load average is printed beside the table, and the CPU the server process got (server cores) and
spent per request: on a busy machine the first is small and every number is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from skillsoup.cli import main; sys.exit(main(sys.argv[1:]))"


def build_registry(path: Path, embedder: str | None, names: list[str] | None, model: str | None = None) -> Path:
    """The demo skills, their states captured with the served model (not on the first request)."""
    from skillsoup import load_model, load_skills
    from skillsoup.demo import DEMO_MODEL_DIR
    from skillsoup.registry import SkillRegistry

    skills = [s for s in load_skills([ROOT / "skills" / "demo"]) if names is None or s.name in names]
    with SkillRegistry.open(path, embedder=embedder) as reg:
        reg.add(skills, load_model(model or DEMO_MODEL_DIR))
    return path


def queries_for(registry: Path, n_per_skill: int = 50) -> list[tuple[str, str]]:
    """(held-out input, its skill) of the demo skills in the registry, interleaved."""
    from skillsoup.demo import corpus
    from skillsoup.registry import SkillRegistry

    with SkillRegistry.open(registry) as reg:
        names = [n for n in reg.names() if n in corpus.SKILLS_BY_NAME]
    per_skill = [[(q, n) for q in corpus.sample_inputs(n, n_per_skill, split="heldout")] for n in names]
    return [q for group in zip(*per_skill) for q in group]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``skillsoup serve`` in a subprocess (or, with ``in_process``, a thread: for the smoke test)."""

    def __init__(self, registry: Path, model: str | None, max_batch: int, prefill: str, in_process: bool,
                 threads: int = 1, prefill_pass_ms: float = 50.0):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc = self._thread = None
        if in_process:
            from skillsoup.serve.engine import EngineConfig
            from skillsoup.serve.server import ServeOptions, ServerThread, build_local, open_soup

            engine = EngineConfig(max_batch=max_batch, prefill=prefill, prefill_pass_ms=prefill_pass_ms)
            options = ServeOptions(registry=registry, model=model, engine=engine)
            self._soup = open_soup(options)
            app, _ = build_local(self._soup, options, on_close=self._soup.close)
            self._thread = ServerThread(app, port=self.port).start()
            return
        args = ["serve", "--port", str(self.port), "--registry", str(registry), "--threads", str(threads),
                "--max-batch", str(max_batch), "--prefill", prefill, "--prefill-pass-ms", str(prefill_pass_ms),
                "--log-level", "warning"]
        self._proc = subprocess.Popen([sys.executable, "-c", CLI, *args, *(["--model", model] if model else [])],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._wait()

    def _wait(self) -> None:
        import httpx

        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"skillsoup serve did not start: {self._proc.stderr.read()[-2000:]}")
            time.sleep(0.3)

    def engine_counters(self) -> dict[str, float]:
        import httpx

        out = {}
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line.startswith(("skillsoup_engine_steps_total", "skillsoup_engine_row_steps_total")):
                name, value = line.split()
                out[name] = float(value)
        return out

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux /proc); None in-process."""
        if self._proc is None:
            return None
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
        else:
            self._proc.terminate()
            self._proc.wait(60)


async def _one(client, url: str, query: tuple[str, str], max_tokens: int, pinned: bool
               ) -> tuple[float, float, int, int]:
    """(TTFT s, latency s, completion tokens, chunks with text) of one streamed request: routed, or
    pinned to its skill. A busy server sends several tokens in a chunk."""
    model = f"skillsoup/{query[1]}" if pinned else "skillsoup"
    body = {"model": model, "messages": [{"role": "user", "content": query[0]}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft, tokens, chunks = None, 0, 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"HTTP {reply.status_code}: {(await reply.aread())[:300]!r}")
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                chunks += 1
                ttft = time.perf_counter() - t0 if ttft is None else ttft
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    latency = time.perf_counter() - t0
    return (ttft if ttft is not None else latency), latency, tokens, chunks


async def run_level(url: str, clients: int, queries: list[tuple[str, str]], n_requests: int, max_tokens: int,
                    start: int = 0, pinned: bool = False) -> dict:
    import httpx

    order = [queries[(start + i) % len(queries)] for i in range(n_requests)]
    per_client = [order[i::clients] for i in range(clients)]
    results: list[tuple[float, float, int, int]] = []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        async def worker(mine: list[str]) -> None:
            for query in mine:
                results.append(await _one(client, url, query, max_tokens, pinned))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(mine) for mine in per_client))
        elapsed = time.perf_counter() - t0
    ttfts = sorted(r[0] for r in results)
    tokens = sum(r[2] for r in results)
    return {"clients": clients, "requests": len(results), "seconds": elapsed, "req_s": len(results) / elapsed,
            "tok_s": tokens / elapsed, "tokens_per_answer": tokens / len(results),
            "chunks_per_answer": sum(r[3] for r in results) / len(results),
            "ttft_p50_ms": 1000 * statistics.median(ttfts), "ttft_p95_ms": 1000 * _quantile(ttfts, 0.95),
            "latency_p50_ms": 1000 * statistics.median(r[1] for r in results)}


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registry", type=Path, help="a registry of demo skills (default: build one in a temp folder)")
    ap.add_argument("--model", help="model folder (default: the demo model)")
    ap.add_argument("--embedder", default=None, help="embedder for a built registry (default: all-MiniLM-L6-v2)")
    ap.add_argument("--skills", help="comma-separated demo skills for a built registry (default: all)")
    ap.add_argument("--levels", default="1,8,32", help="concurrent clients per run; 1 is one at a time")
    ap.add_argument("--per-client", type=int, default=6, help="requests each client sends")
    ap.add_argument("--min-requests", type=int, default=32, help="at least this many requests per level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--prefill", default="auto", choices=["auto", "parallel", "steps"])
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads (the clients share the CPU)")
    ap.add_argument("--prefill-pass-ms", type=float, default=50.0, help="skillsoup serve --prefill-pass-ms (0: no cap)")
    ap.add_argument("--pinned", action="store_true", help="pin each query's skill (skillsoup/<skill>): no routing")
    ap.add_argument("--rounds", type=int, default=1, help="run every level this many times, interleaved; medians")
    ap.add_argument("--in-process", action="store_true", help="serve from a thread of this process (smoke test)")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        registry = args.registry or build_registry(Path(tmp) / "reg", args.embedder,
                                                   args.skills.split(",") if args.skills else None, args.model)
        queries = queries_for(registry)
        server = Server(registry, args.model, args.max_batch, args.prefill, args.in_process, args.threads,
                        args.prefill_pass_ms)
        levels = [int(x) for x in args.levels.split(",")]
        runs: dict[int, list[dict]] = {c: [] for c in levels}
        try:
            asyncio.run(run_level(server.url, 1, queries, min(4, len(queries)), args.max_tokens))  # warm up
            start = 4
            for _ in range(args.rounds):  # interleaved, so a busy minute on a shared machine hits every level
                for clients in levels:
                    before, cpu_before = server.engine_counters(), server.cpu_seconds()
                    n = max(clients * args.per_client, args.min_requests)
                    row = asyncio.run(run_level(server.url, clients, queries, n, args.max_tokens, start, args.pinned))
                    start += n  # each run asks new queries (until the pool of held-out ones wraps around)
                    after = server.engine_counters()
                    steps = after["skillsoup_engine_steps_total"] - before["skillsoup_engine_steps_total"]
                    row_steps = after["skillsoup_engine_row_steps_total"] - before["skillsoup_engine_row_steps_total"]
                    row["mean_batch"] = row_steps / steps if steps else 0.0
                    cpu = server.cpu_seconds() - cpu_before if cpu_before is not None else float("nan")
                    row["cpu_ms_per_request"] = 1000 * cpu / row["requests"]
                    row["server_cores"] = cpu / row["seconds"]
                    runs[clients].append(row)
        finally:
            server.stop()
        rows = [{k: statistics.median(r[k] for r in runs[c]) for k in runs[c][0]} for c in levels]
    load_after = os.getloadavg()
    base = rows[0]["tok_s"] if rows and rows[0]["clients"] == 1 else None
    print(f"skillsoup serve on {os.cpu_count()} CPUs, {args.threads} torch thread(s), model {args.model or 'demo'}, "
          f"prefill {args.prefill} (pass >= {args.prefill_pass_ms:g} ms), max batch {args.max_batch}, "
          f"max_tokens {args.max_tokens}, {len(queries)} {'pinned' if args.pinned else 'routed'} demo queries, "
          f"median of {args.rounds} round(s)")
    print("| clients | requests | req/s | tokens/s | x one at a time | TTFT p50 ms | TTFT p95 ms | latency p50 ms "
          "| tokens/answer | chunks/answer | mean batch | server CPU ms/request | server cores |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['tok_s'] / base:.1f}x" if base else "-"
        print(f"| {r['clients']:.0f} | {r['requests']:.0f} | {r['req_s']:.1f} | {r['tok_s']:.0f} | {ratio} | "
              f"{r['ttft_p50_ms']:.0f} | {r['ttft_p95_ms']:.0f} | {r['latency_p50_ms']:.0f} | "
              f"{r['tokens_per_answer']:.1f} | {r['chunks_per_answer']:.1f} | {r['mean_batch']:.1f} | {r['cpu_ms_per_request']:.0f} | "
              f"{r['server_cores']:.2f} |")
    print(f"load average (1, 5, 15 min): before {_load(load_before)}, after {_load(load_after)}; "
          "on a shared machine re-run quietly before quoting absolute numbers")
    return rows


def _load(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
