"""In-context evaluation (``skillsoup eval icl``): accuracy and NLL of zero-shot, the k-shot prompt,
the stored state, mixed states and the router's state, per skill.

    icl      the evaluation: evaluate(model, skills, ks, methods) -> ICLReport
    cases    one batch of prompts: greedy answers and teacher-forced NLL (score_cases / _ref)
    report   the report's values and tables; plot: its PNG (matplotlib, optional)
"""

from skillsoup.evals.icl import evaluate
from skillsoup.evals.report import ICLReport

__all__ = ["ICLReport", "evaluate"]
