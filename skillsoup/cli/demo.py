"""``skillsoup demo``: show, on a model, that an injected state equals reading the demonstrations
in the prompt, and what it saves."""

from __future__ import annotations

import time

from rich.table import Table

from skillsoup.cli import app
from skillsoup.cli.common import ModelOpt, console, load_cli_model


@app.command()
def demo(model: ModelOpt = None) -> None:
    """Capture a state from demonstrations, inject it, and compare with reading them in the prompt."""
    import torch

    m = load_cli_model(model)
    demos = "".join(f"Input: {w}\nOutput: {w.upper()}\n" for w in ["cat", "river", "lamp", "stone"] * 8)
    query = "Input: garden\nOutput:"
    demo_ids, query_ids = m.encode(demos), m.encode(query)
    t0 = time.perf_counter()
    state = m.capture(demo_ids)
    t_capture = time.perf_counter() - t0
    t0 = time.perf_counter()
    injected, _ = m.forward(query_ids, state, logits="last")
    t_injected = time.perf_counter() - t0
    t0 = time.perf_counter()
    in_prompt, _ = m.forward(demo_ids + query_ids, logits="last")
    t_prompt = time.perf_counter() - t0
    err = float((injected - in_prompt).norm() / in_prompt.norm())
    answer = "".join(m.generate(m.encode(query), state, max_new_tokens=12, stop=["\n"]))
    table = Table(title=f"{m.arch} model {m.source}: {len(demo_ids)} demonstration tokens, {len(query_ids)} query tokens")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("capture demonstrations", f"{t_capture * 1e3:.1f} ms")
    table.add_row("query from injected state", f"{t_injected * 1e3:.1f} ms")
    table.add_row("demonstrations + query in the prompt", f"{t_prompt * 1e3:.1f} ms")
    table.add_row("speed-up of the query", f"{t_prompt / t_injected:.1f}x")
    table.add_row("relative logit difference", f"{err:.2e}")
    table.add_row("same next token", str(bool(torch.argmax(injected) == torch.argmax(in_prompt))))
    table.add_row("demonstrations (the skill)", "32 pairs like 'cat' -> 'CAT'")
    table.add_row("query", repr(query))
    table.add_row("answer from the injected state", repr(answer.strip()))
    console.print(table)
