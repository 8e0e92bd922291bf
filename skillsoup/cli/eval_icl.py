"""``skillsoup eval icl``: is a stored or mixed state as good as the k-shot prompt? (rendering over
skillsoup.evals.icl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from skillsoup.cli import eval_app
from skillsoup.cli.common import (
    ChromaUrlOpt,
    ModelOpt,
    console,
    err_console,
    load_cli_model,
    open_registry,
)
from skillsoup.errors import RoutingError


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(title: str, scores) -> Table:
    from skillsoup.evals.report import label

    table = Table(title=title, title_justify="left")
    # accuracy; NLL per output token; answers equal to the k-shot prompt's; NLL minus its NLL;
    # decay-mix's distance to the one-pass state; router: queries whose top match is this skill
    for col in ("method", "acc", "NLL", "=prompt", "NLL gap", "state err", "routed"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for s in scores:
        table.add_row(label(s), f"{s.accuracy:.2f}", f"{s.nll:.3f}", _cell(s.agree_with_prompt, ".0%"),
                      _cell(s.nll_gap, "+.1e"), _cell(s.state_error, ".1e"), _cell(s.routed_to_skill, ".0%"))
    return table


@eval_app.command("icl")
def eval_icl(
    skill_files: Annotated[list[Path], typer.Argument(help="Skill files or folders (YAML, JSONL, Markdown).")],
    model: ModelOpt = None,
    k: Annotated[Optional[str], typer.Option("--k", help="Demonstration counts, e.g. 0,1,4,8 (default 0,1,4,8,32 capped at each skill's demonstrations).")] = None,
    methods: Annotated[str, typer.Option("--methods", help="zero-shot, prompt, state, mean-mix, decay-mix, router (comma-separated) or all.")] = "all",
    n_tests: Annotated[Optional[int], typer.Option("--n-tests", help="Tests per skill (a seeded sample; default all).")] = None,
    split: Annotated[Optional[float], typer.Option("--split", help="For skills without tests: hold out this fraction of the demonstrations.")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the results as JSON to FILE ('-': stdout, instead of tables).")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write accuracy and NLL vs k to FILE.png (needs matplotlib).")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print one markdown table (accuracy / NLL) instead of rich tables.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --split and --n-tests.")] = 0,
    mix_sets: Annotated[int, typer.Option("--mix-sets", help="mean-mix: disjoint demonstration sets to average.")] = 2,
    router: Annotated[str, typer.Option("--router", "-r", help="router method: text, state or hybrid.")] = "text",
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Most new tokens per answer.")] = 64,
    registry: Annotated[Optional[Path], typer.Option("--registry", metavar="DIR", help="Registry to route in for the router method (default: a temporary one holding the skills evaluated).")] = None,
    chroma_url: ChromaUrlOpt = None,
) -> None:
    """Exact-match accuracy and NLL per output token of zero-shot, k-shot prompts, stored states,
    mixed states and the router's state, per skill and on average."""
    from skillsoup.evals import icl as icl_eval
    from skillsoup.evals.plot import check_plot_path, require_matplotlib
    from skillsoup.evals.report import markdown_table, structure_lines
    from skillsoup.routing.router import ROUTERS
    from skillsoup.skills.loader import load_skills

    ks = icl_eval.parse_ks(k) if k is not None else None
    chosen = icl_eval.parse_methods(methods)
    if router not in ROUTERS:
        raise RoutingError(f"unknown router {router!r}; choose one of {', '.join(ROUTERS)}")
    if max_tokens < 1:
        raise icl_eval.ICLEvalError(f"--max-tokens {max_tokens}: give 1 or more")
    if json_out and json_out != "-" and not Path(json_out).parent.is_dir():
        raise icl_eval.ICLEvalError(f"--json {json_out}: folder {Path(json_out).parent} does not exist; create it first")
    if plot is not None:  # fail before the work, not after it
        check_plot_path(plot)
        require_matplotlib()
    skills = load_skills(skill_files)
    prepared, _ = icl_eval.check_inputs(skills, ks, chosen, n_tests=n_tests, split=split, seed=seed, mix_sets=mix_sets)
    m = load_cli_model(model)
    to_stdout = json_out == "-"

    def progress(r) -> None:
        best = max(r.scores, key=lambda s: (s.method == "state", s.k), default=None)
        line = f"{r.name}: {r.n_tests} tests" + (f", {best.method} k={best.k} accuracy {best.accuracy:.2f}" if best else "")
        err_console.print(f"[dim]{escape(line)}[/]")

    def run(picker):
        return icl_eval.evaluate(m, skills, ks, chosen, n_tests=n_tests, split=split, seed=seed, mix_sets=mix_sets,
                                 picker=picker, max_new_tokens=max_tokens, progress=progress)

    if "router" in chosen and registry is None and chroma_url is None:  # route among the evaluated skills
        import tempfile

        from skillsoup.registry import SkillRegistry

        with tempfile.TemporaryDirectory(prefix="skillsoup-icl-") as folder, SkillRegistry.open(folder) as reg:
            reg.add([s for s, _ in prepared], m)
            report = run(icl_eval.router_picker(reg, m, router))
    elif "router" in chosen:
        with open_registry(registry, chroma_url) as reg:
            report = run(icl_eval.router_picker(reg, m, router))
    else:
        report = run(None)
    report.settings["router"] = router if "router" in chosen else None
    report.settings["registry"] = str(registry) if registry is not None else "the evaluated skills"
    blob = json.dumps(report.to_dict(), indent=2, ensure_ascii=False)
    if to_stdout:
        typer.echo(blob)
    else:
        if markdown:
            typer.echo(markdown_table(report))
        else:
            for r in report.skills:
                console.print(_table(f"{escape(r.name)}: {r.n_tests} tests ({r.tests_from}), {r.n_demos} demonstrations", r.scores))
            console.print(_table(f"mean over {len(report.skills)} skills", report.mean))
        for line in structure_lines(report):
            console.print(escape(line))
        for note in report.notes:
            console.print(f"[yellow]{escape(note)}[/]")
        err_console.print(f"[dim]{report.seconds:.1f} s[/]")
    if json_out and not to_stdout:
        Path(json_out).write_text(blob + "\n", encoding="utf-8")
        err_console.print(f"[dim]wrote {escape(json_out)}[/]")
    if plot is not None:
        from skillsoup.evals.plot import plot_report

        plot_report(report, plot)
        err_console.print(f"[dim]wrote {escape(str(plot))}[/]")
