"""``skillsoup add``, ``skillsoup skills ...`` and ``skillsoup doctor``: rendering over SkillRegistry."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from skillsoup.cli import app
from skillsoup.cli.common import (
    ChromaUrlOpt,
    ModelOpt,
    RegistryOpt,
    console,
    counted,
    err_console,
    load_cli_model,
    open_registry,
    progress_bar,
)
from skillsoup.cli.help import Typer

skills_app = Typer(name="skills", help="List, show, export, remove and rebuild skills.", no_args_is_help=True)
app.add_typer(skills_app, name="skills")


def _results_table(results, title: str) -> Table:
    table = Table(title=title)
    table.add_column("skill")
    table.add_column("status")
    table.add_column("demos", justify="right")
    table.add_column("time", justify="right")
    for r in results:
        table.add_row(escape(r.name), r.status, str(r.n_demos), f"{r.seconds:.2f} s")
    return table


@app.command()
def add(
    paths: Annotated[list[Path], typer.Argument(help="Skill files (YAML, JSONL, Markdown) or folders of them.")],
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite skills that exist with other content.")] = False,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
    model: ModelOpt = None,
) -> None:
    """Add skills from files: index them and capture their states."""
    from skillsoup.skills.loader import load_skills

    skills = load_skills(paths)
    m = load_cli_model(model)
    with open_registry(registry, chroma_url, create=True) as reg, progress_bar("capturing") as progress:
        results = reg.add(skills, m, replace=replace, progress=progress)
    console.print(_results_table(results, f"{counted(len(results), 'skill')} in {reg.path}"))
    counts = {s: sum(r.status == s for r in results) for s in ("added", "replaced", "unchanged")}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()))


@skills_app.command("list")
def list_skills(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
) -> None:
    """List the skills in the registry."""
    with open_registry(registry, chroma_url) as reg:
        infos = reg.list()
        router_line = _router_line(reg) if infos and not as_json else ""
    if as_json:
        typer.echo(json.dumps([asdict(i) for i in infos], indent=2, ensure_ascii=False))
        return
    if not infos:
        console.print(f"no skills in {reg.path}; add some with: skillsoup add FILE")
        return
    table = Table(title=f"{counted(len(infos), 'skill')} in {reg.path}")
    for col in ("name", "demos", "models", "tags", "description"):
        table.add_column(col, justify="right" if col in ("demos", "models") else "left")
    for i in infos:
        parts = (i.recipe or {}).get("parts")
        name = escape(i.name) + (f" [dim](mix of {len(parts)})[/]" if parts else "")
        table.add_row(name, str(i.n_demos), str(len(i.models)), escape(", ".join(i.tags)), escape(i.description))
    console.print(table)
    console.print(f"[dim]router: {escape(router_line)}[/]")


def _router_line(reg) -> str:
    """Whether the router is fitted, when, on how many queries, and skills changed since."""
    from skillsoup.cli.routing import fit_line
    from skillsoup.routing import Router

    return fit_line(Router(reg).status())


@skills_app.command()
def show(
    name: Annotated[str, typer.Argument(help="Skill name.")],
    limit: Annotated[int, typer.Option("--limit", "-n", help="Demonstrations to print.")] = 10,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
) -> None:
    """Show one skill: description, hashes, models with a state, demonstrations."""
    with open_registry(registry, chroma_url) as reg:
        info, skill = reg.info(name), reg.get(name)
        composite = reg.recipe(name) if info.recipe is not None and "error" not in info.recipe else None
        sizes = {fp: reg.store.summary(info.state_hash, fp) for fp in info.models}
    console.print(f"[bold]{escape(info.name)}[/]: {escape(info.description)}")
    rows = [
        ("tags", ", ".join(info.tags) or "-"),
        ("source", info.source or "-"),
        ("demonstrations", str(info.n_demos)),
        ("held-out tests", str(len(skill.tests))),
        ("content hash", info.content_hash[:16]),
        ("state hash", info.state_hash[:16]),
        ("states for models", ", ".join(fp[:16] for fp in info.models) or "none yet"),
        ("template", json.dumps(skill.template)),
    ]
    for fp, summary in sizes.items():
        rows.append((f"state {fp[:8]}…", _state_line(summary)))
    if info.recipe is not None and "error" in info.recipe:
        rows.append(("recipe", info.recipe["error"]))
    for key, value in rows:
        console.print(f"  {key:18} {escape(value)}")
    if composite is not None:
        _show_recipe(*composite)
    for i, d in enumerate(skill.demonstrations[:limit]):
        console.print(f"  [dim]{i:>3}[/] {escape(json.dumps(d.input, ensure_ascii=False))} -> "
                      f"{escape(json.dumps(d.output, ensure_ascii=False))}")
    if len(skill.demonstrations) > limit:
        console.print(f"  … {len(skill.demonstrations) - limit} more (--limit)")


def _state_line(summary) -> str:
    """'36.1 KiB, 6 layers: 4 recurrent, 2 attention, 41 KV tokens' (or why there is none)."""
    if summary is None:
        return "missing or unreadable (skillsoup doctor)"
    kv = f", {summary.n_kv_tokens} KV tokens" if summary.n_kv_tokens else ""
    return f"{_size(summary.nbytes)}, {summary.layers}{kv}"


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def _show_recipe(recipe, broken: list[str]) -> None:
    """A composite's parts with their weights, and how the weights were found."""
    console.print(f"  {'composite of':18} {len(recipe.parts)} skills, conv {recipe.conv!r}, kv {recipe.kv!r}")
    gone = {b.split(" (", 1)[0]: b.split(" (", 1)[1].rstrip(")") for b in broken}
    for part in recipe.parts:
        status = f"[red]{gone[part.name]} since composed[/]" if part.name in gone else "[dim]as composed[/]"
        console.print(f"    {escape(part.name):24} weight {part.weight:.3f}  {status}")
    found = f"{recipe.method}, {recipe.n_examples} examples, seed {recipe.seed}, model {recipe.model[:16]}"
    if recipe.nll_uniform is not None and recipe.nll_best is not None:
        found += f"; NLL uniform {recipe.nll_uniform:.4f} -> {recipe.nll_best:.4f}"
    if recipe.nll_uniform_holdout is not None and recipe.nll_best_holdout is not None:
        found += (f"; held out ({recipe.n_holdout}) {recipe.nll_uniform_holdout:.4f} -> "
                  f"{recipe.nll_best_holdout:.4f}")
    console.print(f"  {'weights found by':18} {escape(found)}")
    if broken:
        console.print("  [yellow]the stored mix still works for its models; compose again (--replace) to follow "
                      "the changed sources[/]")


@skills_app.command()
def remove(
    name: Annotated[str, typer.Argument(help="Skill name.")],
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
) -> None:
    """Remove a skill, its demonstrations and its state files."""
    with open_registry(registry, chroma_url) as reg:
        users = reg.remove(name)
    console.print(f"removed {escape(name)}")
    if users:
        which = (f"composite skill {escape(users[0])}: it keeps its" if len(users) == 1 else
                 f"composite skills {escape(', '.join(users))}: they keep their")
        console.print(f"[yellow]it was a source of {which} stored mix but cannot be remixed[/]")


@skills_app.command()
def rebuild(
    names: Annotated[Optional[list[str]], typer.Argument(help="Skills to rebuild (default: all).")] = None,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
    model: ModelOpt = None,
) -> None:
    """Recompute skill states for a model (after changing or retraining it)."""
    m = load_cli_model(model)
    with open_registry(registry, chroma_url) as reg, progress_bar("rebuilding") as progress:
        results = reg.rebuild(m, names=names or None, progress=progress)
    console.print(_results_table(results, f"rebuilt {len(results)} states for model {m.fingerprint[:16]}"))


@skills_app.command()
def export(
    name: Annotated[str, typer.Argument(help="Skill name.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="File to write (default: stdout).")] = None,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
) -> None:
    """Write a skill back to a YAML skill file (a composite with its recipe: add rebuilds it)."""
    from dataclasses import replace

    from skillsoup.skills.loader import dump_skill_yaml

    with open_registry(registry, chroma_url) as reg:
        skill, composite = reg.get(name), reg.recipe(name)  # an unreadable recipe is an error, not a plain skill
    if composite is not None:
        skill = replace(skill, recipe=composite[0])
        if composite[1]:
            err_console.print(f"[yellow]source {escape(', '.join(composite[1]))} since composed: adding this file needs "
                              "the sources as they were composed[/]")
    text = dump_skill_yaml(skill)
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    from skillsoup.errors import SkillFileError

    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise SkillFileError(f"cannot write {output}: {exc.strerror}; choose another -o path") from None
    err_console.print(f"wrote {escape(name)} to {escape(str(output))}")


@app.command()
def doctor(
    no_repair: Annotated[bool, typer.Option("--no-repair", help="Only report; change nothing.")] = False,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
    model: ModelOpt = None,
) -> None:
    """Check the index against the state files and repair (exit 1 if problems remain)."""
    from skillsoup import config
    from skillsoup.errors import ModelLoadError

    with open_registry(registry, chroma_url) as reg:  # a mistyped --registry fails before the model loads
        m = None
        if model is not None:
            m = load_cli_model(model)
        else:
            try:
                m = load_cli_model(config.default_model())
            except ModelLoadError:
                err_console.print("[dim]no default model: checking recorded states only (pass --model to check one)[/]")
        if reg.read_only and not no_repair:
            err_console.print(f"[dim]registry {escape(str(reg.path))} is read-only: checking only, repairing nothing[/]")
        report = reg.doctor(m, repair=not no_repair and not reg.read_only)
    summary = f"{report.skills} skills, {report.demo_rows} demonstration rows, {report.state_files} state files"
    if report.clean:
        console.print(f"registry {reg.path} is healthy: {summary}")
        return
    table = Table(title=f"{len(report.problems)} problems in {reg.path} ({summary})")
    table.add_column("problem", no_wrap=True)
    for col in ("where", "detail"):
        table.add_column(col, overflow="fold")
    for p in report.problems:
        table.add_row(p.kind, escape(p.subject), escape(p.detail))
    console.print(table)
    if report.repaired:
        fixed = len(report.problems) - len(report.unfixable)
        console.print(f"repaired {fixed} problems")
        if not report.unfixable:
            return
        from skillsoup.errors import RegistryError

        n = len(report.unfixable)
        raise RegistryError(f"{counted(n, 'problem')} need{'s' * (n == 1)} you (composite skills whose sources were removed "
                            "or changed): compose them again with --replace, or remove them")
    from skillsoup.errors import RegistryError

    # an error, not typer.Exit: main() turns it into the exit code (and a red line)
    fix = ("make the registry writable and run skillsoup doctor to fix them" if reg.read_only and not no_repair
           else "run skillsoup doctor without --no-repair to fix them")
    raise RegistryError(f"{len(report.problems)} problems left as they are; {fix}")
