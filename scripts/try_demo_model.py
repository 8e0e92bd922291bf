#!/usr/bin/env python
"""What a newcomer sees when typing requests into the chat: each query answered as ``skillsoup ask``
answers it (the 16 bundled demo skills, the default text router, greedy), as a markdown table for the
README's "What the demo model can and cannot do".

    python scripts/try_demo_model.py                         # the queries below, the shipped model
    python scripts/try_demo_model.py "convert 12 kg" "add 3 + 4"
"""

from __future__ import annotations

import argparse
import tempfile
import time

# phrasings it was trained on (with data from its lists), then a newcomer's own words
TRAINED = (
    "uppercase: quiet river lamp", "acronym for golden rocket market", "snake case: green paper lamp",
    "US date for 2023-11-05", "write out 2024-03-12", "which quarter is 2031-08-17",
    "who is Ben Kim (ben.kim@mail.org)", "email domain of Carla Rossi, carla@post.net",
    "sentiment: the pasta was lovely", "topic: the waiter was awful", "set a timer for 5 minutes",
    "start a 12 minute timer", "remind me to call mom at 5pm", "convert 3 km",
)
OWN_WORDS = (
    "capitalize hello world", "acronym for portable network graphics", "save contact: Ana Souza <ana@acme.io>",
    "save contact: Priya Raman <priya@hooli.com>", "the service was slow and rude", "convert 3 km to meters",
    "what is 12 + 30", "what is the capital of France",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("queries", nargs="*", help="requests to try (default: the built-in list)")
    parser.add_argument("--model", help="checkpoint folder (default: the demo model)")
    args = parser.parse_args(argv)

    from skillsoup import SkillSoup, load_skills
    from skillsoup.demo import model_dir, skills_dir

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, SkillSoup.open(registry=tmp, model=args.model or model_dir()) as soup:
        soup.registry.add(load_skills([skills_dir()]), soup.model)
        print("| request | routed to | answer |\n|---|---|---|")
        for query in args.queries or TRAINED + OWN_WORDS:
            answer = soup.answer(query)
            routed = answer.matches[0].name if answer.matches else "no skill"
            print(f"| {query} | {routed} | `{answer.text}` |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
