#!/usr/bin/env python
"""Held-out accuracy of the demo model (or any checkpoint) on the 16 demo skills.

For every skill: exact-match accuracy with greedy decoding on held-out inputs (never trained on) for
  zero-shot           the query alone
  k-shot              k demonstrations in the prompt (ids = encode(demos) + encode(query))
  state               the state captured from the skill's demonstrations, injected before the query
  router (text/state) the state a router picks from the query alone: a hook for the router work,
                      shown as "-" until a router is passed to evaluate()
and checks that the injected state writes exactly the same answers as the prompt with the same
demonstrations (the same computation, in two pieces).

    python scripts/eval_demo_model.py                         # markdown table, shipped model
    python scripts/eval_demo_model.py --n 50 --json out.json  # also write JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from skillsoup.demo import DEMO_MODEL_DIR, corpus
from skillsoup.skill import Skill

# query -> state to answer it from (None = no state). The router work plugs in here.
Router = Callable[[str], object]
ROUTER_COLUMNS = ("router (text)", "router (state)")


@dataclass
class SkillResult:
    name: str
    family: str
    n: int
    accuracy: dict[str, float | None] = field(default_factory=dict)  # column -> exact-match share
    state_matches_prompt: float = 0.0  # share of queries where state and k-shot answers are identical
    examples: list[dict] = field(default_factory=list)  # a few wrong answers, for reading
    api_checked: int = 0  # answers re-made with StateModel.generate ...
    api_agrees: int = 0  # ... and identical to the batched decoder's


def prompt_ids(model, skill: Skill, query: str, demos_k: int = 0) -> list[int]:
    """encode(first k demonstrations) + encode(query): the same tokens the state path reads in two pieces."""
    return (model.encode(skill.render_demonstrations(demos_k)) if demos_k else []) + model.encode(skill.render_query(query))


def answer(model, skill: Skill, query: str, *, demos_k: int = 0, state=None, max_new_tokens: int = 64) -> str:
    """Greedy answer through the library's own ``StateModel.generate`` (one query at a time)."""
    ids = prompt_ids(model, skill, query, demos_k)
    return "".join(model.generate(ids, state, stop=skill.stop_strings(), max_new_tokens=max_new_tokens)).strip()


def answers(model, skill: Skill, queries: list[str], *, demos_k: int = 0, state=None, max_new_tokens: int = 64) -> list[str]:
    """Greedy answers to many queries at once: each prompt is read with ``model.forward`` (from
    ``state`` when given), then all rows decode together with ``model.step``. Per row this is the
    computation ``generate`` does; ``--api-check`` compares the two."""
    import torch

    from skillsoup.state import SkillState

    rows, logits = [], []
    for query in queries:
        row_logits, row_state = model.forward(prompt_ids(model, skill, query, demos_k), state, logits="last")
        logits.append(row_logits)
        rows.append(row_state)
    batch_state, logits = SkillState.cat(rows), torch.cat(logits)
    stops, eos = skill.stop_strings(), getattr(model.tokenizer, "eos_token_id", None)
    tokens: list[list[int]] = [[] for _ in queries]
    texts = [""] * len(queries)
    done = [False] * len(queries)
    for i in range(max_new_tokens):
        next_ids = logits.argmax(-1)
        for r, token in enumerate(next_ids.tolist()):
            if done[r]:
                continue
            if token == eos:
                done[r] = True
                continue
            tokens[r].append(token)
            texts[r] = model.decode(tokens[r])
            cut = min((texts[r].find(s) for s in stops if s in texts[r]), default=-1)
            if cut >= 0:
                texts[r], done[r] = texts[r][:cut], True
        if all(done) or i + 1 == max_new_tokens:
            break
        logits, batch_state = model.step(next_ids, batch_state)
    return [t.strip() for t in texts]


def evaluate_skill(model, skill: Skill, ks: list[int], routers: dict[str, Router] | None = None,
                   max_new_tokens: int = 64, api_check: int = 0) -> SkillResult:
    routers = routers or {}
    k_state = len(skill.demonstrations)
    state = model.capture(model.encode(skill.render_demonstrations()))
    queries = [t.input for t in skill.tests]
    run = lambda **kw: answers(model, skill, queries, max_new_tokens=max_new_tokens, **kw)  # noqa: E731
    got = {"zero-shot": run()}
    for k in sorted(set(ks) | {k_state}):
        got[f"{k}-shot"] = run(demos_k=k)
    got["state"] = run(state=state)
    for column, router in routers.items():
        got[column] = [answers(model, skill, [q], state=router(q), max_new_tokens=max_new_tokens)[0] for q in queries]
    result = SkillResult(skill.name, corpus.get_skill(skill.name).family, len(queries))
    expected = [t.output for t in skill.tests]
    result.accuracy = {c: sum(a == e for a, e in zip(v, expected)) / len(expected)
                       for c, v in got.items() if c in ("zero-shot", "state") or c in routers or int(c.split("-")[0]) in ks}
    for column in ROUTER_COLUMNS:
        result.accuracy.setdefault(column, None)
    result.state_matches_prompt = sum(a == b for a, b in zip(got["state"], got[f"{k_state}-shot"])) / len(queries)
    for i in range(min(api_check, len(queries))):  # the batched decoder == StateModel.generate
        for column, kw in (("state", {"state": state}), (f"{k_state}-shot", {"demos_k": k_state})):
            result.api_checked += 1
            result.api_agrees += answer(model, skill, queries[i], max_new_tokens=max_new_tokens, **kw) == got[column][i]
    result.examples = [{"input": q, "expected": e, "state": a, "zero-shot": z}
                       for q, e, a, z in zip(queries, expected, got["state"], got["zero-shot"]) if a != e][:3]
    return result


def evaluate(model, skills: list[Skill], ks: list[int], routers: dict[str, Router] | None = None,
             max_new_tokens: int = 64, api_check: int = 0,
             progress: Callable[[SkillResult], None] | None = None) -> list[SkillResult]:
    results = []
    for skill in skills:
        results.append(evaluate_skill(model, skill, ks, routers, max_new_tokens, api_check))
        if progress:
            progress(results[-1])
    return results


def mean_row(results: list[SkillResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for column in results[0].accuracy:
        values = [r.accuracy[column] for r in results]
        out[column] = None if any(v is None for v in values) else sum(values) / len(values)
    return out


def markdown_table(results: list[SkillResult], k_state: int) -> str:
    columns = list(results[0].accuracy)
    header = ["skill", "family"] + [f"state ({k_state} demos)" if c == "state" else c for c in columns]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(columns)) + "|"]
    for r in results:
        lines.append("| " + " | ".join([r.name, r.family] + [fmt(r.accuracy[c]) for c in columns]) + " |")
    mean = mean_row(results)
    lines.append("| **mean** | | " + " | ".join(f"**{fmt(mean[c])}**" for c in columns) + " |")
    return "\n".join(lines)


def build_routers(model, skills: list[Skill], kinds: list[str]) -> dict[str, Router]:
    """Router columns: a temporary registry holding ``skills``; each query is routed from its text
    alone ("text": MiniLM over demonstration inputs; "state": the model's own state feature) and the
    chosen skills' stored states are mixed with the router's weights, as ``SkillSoup.answer`` does."""
    import tempfile

    from skillsoup.mixing import mix
    from skillsoup.registry import SkillRegistry
    from skillsoup.router import Router as SkillRouter

    registry = SkillRegistry.open(tempfile.mkdtemp(prefix="skillsoup-eval-"))
    registry.add(skills, model)
    router = SkillRouter(registry, model)

    def column(kind: str) -> Router:
        def pick(query: str):
            matches = router.route(query, router=kind)
            if not matches:
                return None
            return mix([registry.state(m.name, model) for m in matches], [m.weight for m in matches])
        return pick

    return {f"router ({kind})": column(kind) for kind in kinds}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEMO_MODEL_DIR), help="checkpoint folder (default: the bundled demo model)")
    p.add_argument("--skills", default="", help="comma-separated skill names (default: all 16)")
    p.add_argument("--n", type=int, default=50, help="held-out inputs per skill")
    p.add_argument("--k", default="1,4,8", help="demonstration counts for the in-prompt columns")
    p.add_argument("--demos", type=int, default=8, help="demonstrations in each skill (the state's)")
    p.add_argument("--seed", type=int, default=0, help="which demonstrations and held-out inputs")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--api-check", type=int, default=3,
                   help="per skill, re-answer this many queries with StateModel.generate and compare")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; batch-1 prompts are small, and 1 thread is far faster on busy shared cores")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON ('-' for stdout)")
    p.add_argument("--routers", default="text,state",
                   help="router columns to fill: text, state (comma-separated; '' for none)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from skillsoup.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model)
    names = [s.strip() for s in args.skills.split(",") if s.strip()] or [s.name for s in corpus.SKILLS]
    ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    skills = [corpus.skill_object(name, args.demos, "demo", args.seed, args.n) for name in names]
    kinds = [k.strip() for k in args.routers.split(",") if k.strip()]
    routers = build_routers(model, skills, kinds) if kinds else None
    t0 = time.time()
    results = evaluate(model, skills, ks, routers=routers, max_new_tokens=args.max_new_tokens, api_check=args.api_check, progress=lambda r: print(
        f"{r.name:15s} " + " ".join(f"{c}={v:.2f}" for c, v in r.accuracy.items() if v is not None),
        file=sys.stderr, flush=True))
    seconds = time.time() - t0
    print(f"\n{args.model}: {args.n} held-out inputs per skill, greedy, exact match ({seconds:.0f} s)\n")
    print(markdown_table(results, args.demos))
    same = [r.state_matches_prompt for r in results]
    print(f"\ninjected state ({args.demos} demos) == {args.demos}-shot prompt: identical answers on "
          f"{sum(same) / len(same):.1%} of queries (min over skills {min(same):.1%})")
    checked, agrees = sum(r.api_checked for r in results), sum(r.api_agrees for r in results)
    if checked:
        print(f"batched greedy decoder == StateModel.generate on {agrees}/{checked} re-answered queries")
    if args.json:
        blob = json.dumps({
            "model": args.model, "n": args.n, "ks": ks, "demos": args.demos, "seed": args.seed, "seconds": seconds,
            "mean": mean_row(results), "skills": [vars(r) for r in results],
        }, indent=2)
        if args.json == "-":
            print(blob)
        else:
            with open(args.json, "w") as f:
                f.write(blob + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
