"""The whole pipeline: add skill files, route each query, mix the skills' states, answer.

    python examples/answer_with_skills.py --skills skills/demo "set a timer for 5 minutes" "which quarter is 2024-03-12"
"""

import argparse

from skillsoup.routing.matches import weight_text
from skillsoup.runtime import SkillSoup
from skillsoup.skills.loader import load_skills

parser = argparse.ArgumentParser(description="Answer queries with routed, mixed skill states.")
parser.add_argument("queries", nargs="+")
parser.add_argument("--registry", help="registry folder (default: the user's)")
parser.add_argument("--model", help="checkpoint folder (default: the demo model)")
parser.add_argument("--skills", help="skill files or a folder of them to add first")
parser.add_argument("--max-tokens", type=int, default=32)
args = parser.parse_args()

with SkillSoup.open(registry=args.registry, model=args.model) as soup:
    if args.skills:  # capture their states (a no-op for skills already added)
        soup.registry.add(load_skills([args.skills]), soup.model)
    for query in args.queries:
        answer = soup.answer(query, max_new_tokens=args.max_tokens)
        used = ", ".join(f"{m.name} {weight_text(m.weight)}" for m in answer.matches) or "no skill"
        t = answer.timings
        print(f"{query!r} -> {answer.text!r}")
        print(f"    skills: {used}; route {t.route_ms:.0f} ms, first token {t.first_token_ms:.0f} ms")
