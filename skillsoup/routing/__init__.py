"""Routing: a query -> the skills to use, with weights, or none.

    Router, RouterParams, SkillMatch   route(query) by text, state or both (router.py)
    matches                            a route's last step: no zero weights, composites' sources folded in
    policies                           candidate features and the named score policies
    state_features, state_index        the model's own state as a routing feature, indexed in Chroma
    fit(router, labelled)              fit the router's parameters on labelled queries
    evaluate(router, labelled)         routing metrics on labelled queries (metrics.py)
"""

from skillsoup.routing.fit import FitReport, fit
from skillsoup.routing.matches import weight_text
from skillsoup.routing.metrics import KEYS, LabelledQuery, evaluate, read_labelled
from skillsoup.routing.router import MAX_QUERY_CHARS, ROUTERS, Router, RouterParams, SkillMatch, check_query

__all__ = [
    "KEYS", "MAX_QUERY_CHARS", "ROUTERS", "FitReport", "LabelledQuery", "Router", "RouterParams", "SkillMatch",
    "check_query", "evaluate", "fit", "read_labelled", "weight_text",
]
