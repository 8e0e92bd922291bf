"""``skillsoup route``, ``ask``, ``fit`` and ``eval routing``: rendering over Router and SkillSoup."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from skillsoup.cli import app, eval_app
from skillsoup.cli.common import (
    ChromaUrlOpt,
    DeviceOpt,
    DtypeOpt,
    KvOpt,
    MixOpt,
    ModelOpt,
    RegistryOpt,
    TemperatureOpt,
    console,
    counted,
    err_console,
    load_cli_model,
    open_registry,
    progress_bar,
)
from skillsoup.errors import RoutingError

QueryArg = Annotated[str, typer.Argument(help="The request, in quotes.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def _router_name(value: str) -> str:
    from skillsoup.routing.router import ROUTERS

    if value not in ROUTERS:  # a usage error (exit 2, names the option), checked before anything loads
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(ROUTERS)}")
    return value


TopKOpt = Annotated[Optional[int], typer.Option("--top-k", "-k", min=1, metavar="N", help="At most this many skills (default: the router's).")]
RouterOpt = Annotated[str, typer.Option("--router", "-r", callback=_router_name, help="text, state (needs the model) or hybrid.")]
ExampleOpt = Annotated[
    Optional[list[str]],
    typer.Option("--example", "-e", metavar="INPUT=>OUTPUT", help="An INPUT=>OUTPUT pair read before the query by the state router (up to 2)."),
]


def _examples(values: Optional[list[str]]) -> list[tuple[str, str]] | None:
    if not values:
        return None
    pairs = []
    for v in values:
        if "=>" not in v:
            raise RoutingError(f"--example {v!r}: write INPUT=>OUTPUT")
        i, o = v.split("=>", 1)
        pairs.append((i.strip(), o.strip()))
    return pairs


def _pins(values: Optional[list[str]]) -> dict[str, float] | None:
    """--skill NAME[:WEIGHT] options -> {name: weight}."""
    if not values:
        return None
    pins: dict[str, float] = {}
    for v in values:
        name, _, weight = v.partition(":")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            w = math.nan
        if not math.isfinite(w) or w <= 0:
            raise RoutingError(f"--skill {v!r}: the weight after ':' must be a number > 0, e.g. --skill {name}:0.5")
        if name in pins:
            raise RoutingError(f"--skill {name!r} is given twice; give each skill once")
        pins[name] = w
    return pins


@app.command()
def route(
    query: QueryArg,
    as_json: JsonOpt = False,
    top_k: TopKOpt = None,
    router: RouterOpt = "text",
    example: ExampleOpt = None,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
    model: ModelOpt = None,
) -> None:
    """Which skills a query goes to, with scores and weights (a dry run: nothing is generated)."""
    from skillsoup.routing.router import Router

    if example and router == "text":  # the text router would drop them without a word
        raise typer.BadParameter("the text router does not read examples; add --router state or --router hybrid",
                                 param_hint="'--example' / '-e'")
    m = load_cli_model(model) if router != "text" else None
    with open_registry(registry, chroma_url) as reg:
        r = Router(reg, m)
        r.load()  # the embedder's load is not route time
        t0 = time.perf_counter()
        matches = r.route(query, top_k=top_k, router=router, examples=_examples(example))
        ms = (time.perf_counter() - t0) * 1000
        status = r.status()
    if as_json:
        typer.echo(json.dumps({"query": query, "router": router, "policy": r.params.policy,
                               "matches": [asdict(x) for x in matches], "route_ms": ms, "fit": status}, ensure_ascii=False))
        return
    if not matches:
        console.print("no skill: the query is answered without one")
    else:
        from skillsoup.chat.transcript import route_table

        console.print(route_table(query, matches))
    err_console.print(f"[dim]{router} router, policy {r.params.policy} ({escape(fit_line(status))}), {ms:.0f} ms[/]")


def fit_line(status: dict) -> str:
    """One line: whether the router is fitted, when, on how many queries, and skills changed since."""
    if not status["fitted"]:
        return "default parameters, not fitted"
    line = f"fitted {status['at']} on {status['n']} queries, kept {status['chosen']}"
    if str(status.get("encoder", "")).startswith("tuned:"):
        line += f", encoder {status['encoder']}"
    since = {k: len(v) for k, v in (status.get("since_fit") or {}).items() if v}
    if since:
        line += "; since then " + ", ".join(f"{n} {k}" for k, n in since.items()) + " (imprinted; fit again)"
    return line


@app.command()
def ask(
    query: QueryArg,
    as_json: JsonOpt = False,
    skill: Annotated[Optional[list[str]], typer.Option("--skill", "-s", metavar="NAME[:WEIGHT]", help="Pin NAME[:WEIGHT] instead of routing (repeatable).")] = None,
    mix: MixOpt = "mix",
    kv: KvOpt = "top",
    no_route: Annotated[bool, typer.Option("--no-route", help="Use no skill unless --skill is given.")] = False,
    router: RouterOpt = "text",
    top_k: TopKOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1, max=4096, help="Most new tokens.")] = 64,
    temperature: TemperatureOpt = 0.0,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed for sampling.")] = None,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
) -> None:
    """Answer a query with the routed (or pinned) skills; the answer goes to stdout as it is
    written, a dim line with the skills and timings to stderr."""
    from skillsoup.chat.transcript import skills_line
    from skillsoup.runtime import SkillSoup

    pins = _pins(skill)
    with open_registry(registry, chroma_url) as reg:  # a mistyped --registry fails before the model loads
        soup = SkillSoup(reg, load_cli_model(model, device, dtype))
        stream = soup.stream(query, skills=pins, mix=mix, kv=kv, routing=not no_route, router=router, top_k=top_k,
                             max_new_tokens=max_tokens, temperature=temperature, seed=seed)
        if as_json:
            typer.echo(json.dumps(stream.read().to_dict(), ensure_ascii=False))
            return
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        a = stream.answer
    t = a.timings
    if a.truncated:  # stderr, so stdout stays the answer alone
        err_console.print(f"[yellow](cut at {max_tokens} tokens; raise --max-tokens for more)[/]")
    err_console.print(
        f"[dim]{escape(skills_line(a.matches, a.pinned))} · route {t.route_ms:.0f} ms · load/mix {t.load_mix_ms:.0f} ms"
        f" · first token {t.first_token_ms:.0f} ms · {t.decode_tokens_per_s:.0f} tok/s[/]"
    )


@app.command("fit")
def fit_command(
    file: Annotated[Optional[Path], typer.Argument(
        help='JSONL of {"query": ..., "skill": NAME or null} lines (none: learn from the demonstrations alone).')] = None,
    objective: Annotated[str, typer.Option(
        "--objective", help="balanced (mean of in-scope accuracy and abstain recall), accuracy, abstain, or accuracy@R "
        "(the best in-scope accuracy at abstain recall >= R, e.g. accuracy@0.65).")] = "balanced",
    tune_encoder: Annotated[bool, typer.Option(
        "--tune-encoder", help="Also tune the text encoder on the demonstrations (minutes on a CPU) and keep it "
        "only if it routes the labelled queries better; needs FILE.")] = False,
    as_json: JsonOpt = False,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
) -> None:
    """Fit the router (a classifier over the skills, its abstain threshold) and keep the best of it,
    the unfitted router and the nearest-neighbour baseline on out-of-fold data."""
    from skillsoup.routing import Router, fit
    from skillsoup.routing.selection import min_abstain
    from skillsoup.routing.tune import fit_tuned

    min_recall = min_abstain(objective)  # a typed error names the choices
    tuned = None
    with open_registry(registry, chroma_url) as reg:
        reg.check_writable("store fitted router parameters")  # before fitting, not after
        r = Router(reg)
        if tune_encoder:
            with progress_bar("tuning the encoder") as bar:
                step = (lambda done, total, loss: bar(done, total, f"loss {loss:.3f}")) if bar else None
                tuned = fit_tuned(r, file, objective=objective, progress=step)
            report = tuned.fit
        else:
            report = fit(r, file, objective=objective)
        n_skills = len(reg.names())
    p = report.params
    if as_json:
        typer.echo(json.dumps({"params": p.to_dict(), "routers": report.routers, "chosen": report.chosen,
                               "objective": report.objective, "n": report.n, "seconds": report.seconds,
                               "settings_version": r.settings_version,
                               **({"encoder": _tuning_dict(tuned)} if tuned else {})}))
        return
    if tuned:
        console.print(_tuning_table(tuned))
    source = counted(report.n, "labelled query", "labelled queries") if report.n else "the demonstrations alone"
    table = Table(title=f"fitted on {source} in {report.seconds:.1f} s (embedding {report.embed_seconds:.1f} s); "
                        "out-of-fold")
    for col in ("router", "in-scope accuracy", "abstain recall", f"{report.objective} objective"):
        table.add_column(col, justify="left" if col == "router" else "right")
    for name, v in report.routers.items():
        mark = " [bold green]chosen[/]" if name == report.chosen else ""
        score = _fmt(v["objective"]) if min_recall is None or v["objective"] >= 0 else f"abstain < {min_recall:g}"
        table.add_row(name + mark, _fmt(v["in_scope_accuracy"]), _fmt(v["abstain_recall"]), score)
    console.print(table)
    extra = f", {len(p.skill_thresholds)} per-skill thresholds" if p.policy == "classifier" else ""
    console.print(f"policy {p.policy}, threshold {p.threshold:.3f}{extra}; stored as settings v{r.settings_version}")
    console.print("[dim]abstain recall: labelled nulls and queries of skills held out of the model, half each; "
                  "measure held-out queries with skillsoup eval routing FILE.jsonl[/]")
    if 0 < report.n < n_skills:  # the choice above was judged on fewer queries than there are skills
        err_console.print(f"[yellow]warning:[/] {counted(report.n, 'labelled query', 'labelled queries')} for "
                          f"{counted(n_skills, 'skill')}: most skills have none, so the routers were compared on "
                          "very little; label a few queries per skill and fit again")


def _tuning_dict(t) -> dict:
    return {"kept": t.kept, "encoder": t.encoder, "reembedded": t.reembedded, "abstention_judged": t.abstention_judged,
            "tuning": {k: getattr(t.tuning, k) for k in ("pairs", "steps", "seconds", "loss_first", "loss_last")},
            "trials": [{"label": x.label, "encoder": x.encoder, "router": x.report.chosen, "judged": x.judged,
                        **{k: x.chosen.get(k) for k in ("in_scope_accuracy", "abstain_recall_real", "abstain_recall_pseudo")}}
                       for x in t.trials]}


def _tuning_table(t) -> Table:
    tu = t.tuning
    table = Table(title=f"encoder tuned on {tu.pairs} demonstration pairs in {tu.steps} steps, {tu.seconds:.0f} s "
                        f"(loss {tu.loss_first:.2f} -> {tu.loss_last:.2f}); out-of-fold")
    for col in ("encoder", "router", "in-scope accuracy", "abstain: labelled nulls", "abstain: held-out skills",
                "judged"):
        table.add_column(col, justify="left" if col in ("encoder", "router") else "right")
    for x in t.trials:
        mark = " [bold green]kept[/]" if x.label == t.kept else ""
        table.add_row(f"{x.label} ({escape(x.encoder)}){mark}", x.report.chosen, _fmt(x.chosen["in_scope_accuracy"]),
                      _fmt(x.chosen.get("abstain_recall_real")), _fmt(x.chosen.get("abstain_recall_pseudo")), _fmt(x.judged))
    table.caption = ("judged on the labelled queries alone (the tuned encoder has seen every skill's demonstrations)"
                     if t.abstention_judged else "fewer than 20 labelled nulls: judged on in-scope accuracy, and the "
                     "tuned encoder must keep the held-out skills' abstain recall")
    if t.reembedded:
        table.caption += f"; {t.reembedded} index rows re-embedded with {t.encoder}"
    return table


@eval_app.command("routing")
def eval_routing(
    file: Annotated[Path, typer.Argument(help='JSONL of {"query": ..., "skill": NAME or null} lines.')],
    as_json: JsonOpt = False,
    router: RouterOpt = "text",
    latency_sample: Annotated[int, typer.Option("--latency-sample", min=0, help="Queries timed one by one.")] = 200,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
    model: ModelOpt = None,
) -> None:
    """Routing accuracy, abstention, macro-F1, calibration and latency, next to the
    nearest-neighbour-threshold baseline."""
    from skillsoup.routing.metrics import KEYS, evaluate
    from skillsoup.routing.router import Router

    m = load_cli_model(model) if router != "text" else None
    with open_registry(registry, chroma_url) as reg:
        r = Router(reg, m)
        result = evaluate(r, file, latency_sample=latency_sample, kind=router)
    if as_json:
        typer.echo(json.dumps(result))
        return
    base = result["baseline"]
    table = Table(title=f"routing on {counted(result['n'], 'labelled query', 'labelled queries')} ({escape(str(file))})")
    table.add_column("metric")
    table.add_column(f"{router} router: {result['policy']}" + (" (fitted)" if result["fitted"] else " (default)"), justify="right")
    table.add_column("baseline: nn-threshold", justify="right")
    for key in KEYS:
        table.add_row(key, _fmt(result[key]), _fmt(base[key]))
    console.print(table)


def _fmt(value) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"
