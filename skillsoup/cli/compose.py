"""``skillsoup compose``: search mixing weights for some skills on a few examples and save the mix
as a composite skill. Rendering over :func:`skillsoup.compose.compose_skill`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from skillsoup.cli import app
from skillsoup.cli.common import (
    MIX_CHOICES, ChromaUrlOpt, KvOpt, ModelOpt, RegistryOpt, console, load_cli_model, one_of, open_registry,
)

# skillsoup.compose.DEFAULT_BUDGET, written out: importing skillsoup.compose loads torch, and every
# command (even --version) imports this module (tests/cli/test_usage_errors.py checks the two agree)
BUDGET_HELP = "Evaluations of the objective, the uniform mix included (default 60)."


def _unescape(text: str) -> str:
    """A template typed in a shell: ``\\n`` and ``\\t`` mean newline and tab, as in skill files."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


@app.command()
def compose(
    name: Annotated[str, typer.Argument(help="Name of the composite skill to save.")],
    sources: Annotated[str, typer.Option("--from", metavar="A,B[,...]", help="Source skills, comma-separated (at least 2).")],
    examples: Annotated[Path, typer.Option("--examples", metavar="FILE", help='JSONL file, one {"input": ..., "output": ...} a line.')],
    budget: Annotated[Optional[int], typer.Option("--budget", help=BUDGET_HELP)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the search and of the held-out split.")] = 0,
    holdout: Annotated[float, typer.Option("--holdout", help="Fraction of the examples held out to check the weights.")] = 0.0,
    template: Annotated[Optional[str], typer.Option("--template", help="Template for the examples (default: the first source's); \\n is a newline.")] = None,
    description: Annotated[Optional[str], typer.Option("--description", help="What the composite does (default: from its sources).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a skill of that name.")] = False,
    conv: Annotated[str, typer.Option("--conv", callback=one_of(*MIX_CHOICES), help="Conv states of the mixed skills: mix or top.")] = "mix",
    kv: KvOpt = "top",
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
    model: ModelOpt = None,
) -> None:
    """Find weights for mixing skills' states that best fit EXAMPLES (CMA-ES on the simplex, lowest
    mean NLL of the outputs) and save the mix as a routable composite skill."""
    from skillsoup.compose import compose_skill, load_examples

    names = [s.strip() for s in sources.split(",") if s.strip()]
    pairs = load_examples(examples)
    with open_registry(registry, chroma_url) as reg:  # its sources are in it: a missing folder is a typo
        m = load_cli_model(model)
        result, added = compose_skill(
            reg, m, name, names, pairs, template=_unescape(template) if template is not None else None,
            description=description, seed=seed, holdout=holdout, replace=replace, conv=conv, kv=kv,
            **({} if budget is None else {"budget": budget}),
        )
    table = Table(title=f"compose {name}: {result.evaluations} evaluations, {result.method}, seed {seed}")
    table.add_column("mix")
    for source in result.sources:
        table.add_column(escape(source), justify="right")
    table.add_column(f"NLL ({result.n_search} searched)", justify="right")
    if result.n_holdout:
        table.add_column(f"NLL ({result.n_holdout} held out)", justify="right")
    uniform = [1 / len(result.sources)] * len(result.sources)
    for label, weights, nll, held in (("uniform", uniform, result.uniform_nll, result.uniform_holdout_nll),
                                      ("found", result.weights, result.best_nll, result.best_holdout_nll)):
        cells = [label, *(f"{w:.3f}" for w in weights), f"{nll:.4f}"]
        table.add_row(*cells, *([f"{held:.4f}"] if result.n_holdout else []))
    console.print(table)
    console.print(f"{added.status} composite skill {escape(name)} in {reg.path}")
