"""An application that uses only skillsoup's Router: it sends each request to one of its own
handlers by the skill the router picks, and to a fallback when the router abstains. No model is
loaded; the registry's text index is enough. With the demo skills added (skillsoup add skills/demo/):

    python examples/embed_router.py "set a timer for 5 minutes" "convert 3 km" "remind me to call mom at 5pm" \
        "what is the capital of France"
"""

from __future__ import annotations

import argparse

from skillsoup.registry import SkillRegistry
from skillsoup.routing.router import Router


def start_timer(query: str) -> str:
    return f"timer service <- {query!r}"


def convert_units(query: str) -> str:
    return f"unit converter <- {query!r}"


HANDLERS = {"timer-call": start_timer, "metric-convert": convert_units}  # skill name -> handler


def dispatch(router: Router, query: str) -> str:
    matches = router.route(query, top_k=1)
    if not matches:
        return f"fallback (no skill fits) <- {query!r}"
    best = matches[0]
    handler = HANDLERS.get(best.name)
    if handler is None:  # a skill this app has no handler for
        return f"generic handler for skill {best.name!r} (score {best.score:.2f}) <- {query!r}"
    return handler(query)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queries", nargs="+")
    parser.add_argument("--registry", help="registry folder (default: the user's)")
    args = parser.parse_args(argv)
    with SkillRegistry.open(args.registry) as registry:
        unknown = sorted(set(HANDLERS) - set(registry.names()))
        if unknown:  # a handler whose skill is not in the registry would never run
            parser.exit(1, f"the registry has no skill {', '.join(unknown)}; add them: skillsoup add skills/demo/\n")
        router = Router(registry)  # parameters stored in the registry (skillsoup fit), else defaults
        for query in args.queries:
            print(dispatch(router, query))


if __name__ == "__main__":
    main()
