"""Composite skills: search mixing weights for a few skills' states on a handful of examples.

    load_examples(path)                        (input, output) pairs from JSONL, checked like skill files
    compose(model, sources, examples, template) -> CompositionResult   (CMA-ES over simplex weights)
    compose_skill(registry, model, name, sources, examples)            -> saved as a composite skill
"""

from skillsoup.compose.composite import compose_skill
from skillsoup.compose.examples import load_examples, split_examples
from skillsoup.compose.weights import DEFAULT_BUDGET, CompositionResult, compose, example_nll, simplex_weights

__all__ = ["DEFAULT_BUDGET", "CompositionResult", "compose", "compose_skill", "example_nll", "load_examples",
           "simplex_weights", "split_examples"]
