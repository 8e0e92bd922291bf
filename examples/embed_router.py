"""An application that uses only skillsoup's Router: it sends each request to one of its own
handlers by the skill the router picks, and to a fallback when the router abstains. No model is
loaded; the registry's text index is enough.

    python examples/embed_router.py --registry DIR "set a timer for 5 minutes" "tell me a joke"
"""

from __future__ import annotations

import argparse

from skillsoup.registry import SkillRegistry
from skillsoup.routing.router import Router


def start_timer(query: str) -> str:
    return f"timer service <- {query!r}"


def convert_units(query: str) -> str:
    return f"unit converter <- {query!r}"


HANDLERS = {"timer": start_timer, "convert": convert_units}  # skill name -> handler


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
        router = Router(registry)  # parameters stored in the registry (skillsoup fit), else defaults
        for query in args.queries:
            print(dispatch(router, query))


if __name__ == "__main__":
    main()
