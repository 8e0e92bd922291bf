#!/usr/bin/env python
"""Held-out accuracy of the demo model (or any checkpoint) on the 16 bundled demo skills.

For every skill: exact-match accuracy with greedy decoding on held-out inputs (never trained on) for
  zero-shot           the query alone
  k-shot              k demonstrations in the prompt
  state               the state captured from the skill's demonstrations, injected before the query
  router (text/state) the runtime's choice from the query alone: the 16 skills in a temporary
                      registry, routed by text (MiniLM) or by the model's own state, stored states
                      mixed with the router's weights
and how often the injected state writes exactly the k-shot prompt's answers (the same computation,
in two pieces). The scoring is ``skillsoup.evals.icl`` (what ``skillsoup eval icl`` runs); this script
only fixes the demo corpus's skills and lays the table out.

    python scripts/eval_demo_model.py                         # markdown table, shipped model
    python scripts/eval_demo_model.py --n 50 --json out.json  # also write JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from skillsoup.demo import DEMO_MODEL_DIR, corpus


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEMO_MODEL_DIR), help="checkpoint folder (default: the bundled demo model)")
    p.add_argument("--skills", default="", help="comma-separated skill names (default: the 16 bundled)")
    p.add_argument("--n", type=int, default=50, help="held-out inputs per skill")
    p.add_argument("--k", default="1,4,8", help="demonstration counts for the in-prompt columns")
    p.add_argument("--demos", type=int, default=8, help="demonstrations in each skill (the state's)")
    p.add_argument("--seed", type=int, default=0, help="which demonstrations and held-out inputs")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; batch-1 prompts are small, and 1 thread is far faster on busy shared cores")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' for stdout)")
    p.add_argument("--routers", default="text,state", help="router columns: text, state (comma-separated; '' for none)")
    return p.parse_args(argv)


def columns_of(report, router_reports: dict, ks: list[int], demos: int) -> list[dict]:
    """One row per skill: column -> accuracy, plus the routers' share of queries routed to the skill."""
    rows = []
    for i, skill in enumerate(report.skills):
        row = {"skill": skill.name, "zero-shot": skill.score("zero-shot").accuracy}
        row.update({f"{k}-shot": skill.score("prompt", k).accuracy for k in ks})
        state = skill.score("state", demos)
        row[f"state ({demos})"] = state.accuracy
        row["state == prompt"] = state.agree_with_prompt
        for kind, rep in router_reports.items():
            routed = rep.skills[i].score("router")
            row[f"router ({kind})"] = routed.accuracy
            row[f"routed right ({kind})"] = routed.routed_to_skill
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    columns = [c for c in rows[0] if c != "skill" and c != "state == prompt" and not c.startswith("routed right")]
    lines = ["| skill | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row in rows:
        lines.append(f"| {row['skill']} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{sum(r[c] for r in rows) / len(rows):.2f}**" for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from skillsoup.evals import icl as icl_eval
    from skillsoup.models import load_model
    from skillsoup.registry import SkillRegistry

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    names = [s.strip() for s in args.skills.split(",") if s.strip()] or [s.name for s in corpus.SKILLS]
    ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    skills = [corpus.skill_object(name, args.demos, "demo", args.seed, args.n) for name in names]
    say = lambda r: print(f"  {r.name}: " + ", ".join(  # noqa: E731
        f"{s.method}{'' if s.method in ('zero-shot', 'router') else f'@{s.k}'} {s.accuracy:.2f}" for s in r.scores),
        file=sys.stderr, flush=True)
    t0 = time.time()
    report = icl_eval.evaluate(model, skills, sorted(set(ks) | {args.demos}), ["zero-shot", "prompt", "state"],
                               max_new_tokens=args.max_new_tokens, progress=say)
    router_reports = {}
    kinds = [k.strip() for k in args.routers.split(",") if k.strip()]
    if kinds:
        with SkillRegistry.open(tempfile.mkdtemp(prefix="skillsoup-eval-")) as registry:
            registry.add(skills, model)
            for kind in kinds:
                picker = icl_eval.router_picker(registry, model, kind)
                router_reports[kind] = icl_eval.evaluate(model, skills, [args.demos], ["router"], picker=picker,
                                                         max_new_tokens=args.max_new_tokens, progress=say)
    seconds = time.time() - t0
    rows = columns_of(report, router_reports, ks, args.demos)
    print(f"\n{args.model}: {args.n} held-out inputs per skill, greedy, exact match ({seconds:.0f} s)\n")
    print(markdown_table(rows))
    same = [r["state == prompt"] for r in rows]
    print(f"\ninjected state ({args.demos} demos) == {args.demos}-shot prompt: identical answers on "
          f"{sum(same) / len(same):.1%} of queries (min over skills {min(same):.1%})")
    for kind in router_reports:
        share = [r[f"routed right ({kind})"] for r in rows]
        print(f"router ({kind}): top match is the right skill on {sum(share) / len(share):.1%} of queries")
    if args.json:
        blob = json.dumps({"model": args.model, "n": args.n, "ks": ks, "demos": args.demos, "seed": args.seed,
                           "seconds": seconds, "rows": rows, "report": report.to_dict(),
                           "routers": {k: r.to_dict() for k, r in router_reports.items()}}, indent=2)
        if args.json == "-":
            print(blob)
        else:
            with open(args.json, "w") as f:
                f.write(blob + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
