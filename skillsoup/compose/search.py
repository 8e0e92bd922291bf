"""A small, seeded CMA-ES (Hansen's covariance matrix adaptation evolution strategy) for compose.

Minimises ``f(x)`` over R^dim with a fixed budget of evaluations: the first evaluation is the start
point (x0, by default the origin), then generations of ``lam`` samples x ~ m + sigma * N(0, C); the
mean moves to a weighted average of the best ``mu``, C and sigma adapt from the path the mean
takes. Same seed, same objective -> the same trace. dim is small here (sources - 1), so C is
decomposed outright every generation.

Glossary: m mean, sigma step size, C covariance (= B diag(d^2) B^T), ps / pc the step-size and
covariance evolution paths, mueff the variance-effective number of parents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SearchStep:
    evaluation: int  # 0 = the start point
    x: tuple[float, ...]
    value: float


@dataclass(frozen=True)
class SearchResult:
    best_x: tuple[float, ...]
    best_value: float
    trace: tuple[SearchStep, ...]


def cma_es(f: Callable[[np.ndarray], float], dim: int, budget: int, seed: int = 0, sigma0: float = 1.0,
           x0: Sequence[float] | None = None, popsize: int | None = None) -> SearchResult:
    """Minimise ``f`` with at most ``budget`` evaluations (x0 included); returns the best point seen."""
    if dim < 1 or budget < 1 or sigma0 <= 0:
        raise ValueError(f"cma_es needs dim >= 1, budget >= 1, sigma0 > 0; got {dim}, {budget}, {sigma0}")
    rng = np.random.default_rng(seed)
    n = dim
    lam = popsize or 4 + int(3 * math.log(n))
    mu = lam // 2
    w = np.log(mu + 0.5) - np.log(np.arange(1, mu + 1))
    w /= w.sum()
    mueff = 1.0 / float(np.sum(w**2))
    cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
    cs = (mueff + 2) / (n + mueff + 5)
    c1 = 2 / ((n + 1.3) ** 2 + mueff)
    cmu = min(1 - c1, 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
    damps = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (n + 1)) - 1) + cs
    chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))  # E|N(0, I)|

    m = np.zeros(n) if x0 is None else np.asarray(x0, dtype=np.float64).copy()
    sigma, cov = float(sigma0), np.eye(n)
    ps, pc = np.zeros(n), np.zeros(n)
    trace: list[SearchStep] = []

    def evaluate(x: np.ndarray) -> float:
        value = float(f(x))
        if not math.isfinite(value):
            value = math.inf  # a failed candidate ranks last instead of stopping the search
        trace.append(SearchStep(len(trace), tuple(float(v) for v in x), value))
        return value

    evaluate(m)
    generation = 0
    while len(trace) < budget:
        d2, basis = np.linalg.eigh(cov)
        d = np.sqrt(np.maximum(d2, 1e-20))
        z = rng.standard_normal((lam, n))
        y = (z * d) @ basis.T  # rows ~ N(0, C)
        xs = m + sigma * y
        k = min(lam, budget - len(trace))
        values = np.array([evaluate(x) for x in xs[:k]])
        if k < lam:  # the budget ran out inside this generation: no update from a partial one
            break
        generation += 1
        order = np.argsort(values, kind="stable")[:mu]
        y_w = w @ y[order]
        m = m + sigma * y_w
        inv_sqrt = basis @ np.diag(1 / d) @ basis.T
        ps = (1 - cs) * ps + math.sqrt(cs * (2 - cs) * mueff) * (inv_sqrt @ y_w)
        ps_norm = float(np.linalg.norm(ps))
        hsig = ps_norm / math.sqrt(1 - (1 - cs) ** (2 * generation)) / chi_n < 1.4 + 2 / (n + 1)
        pc = (1 - cc) * pc + (math.sqrt(cc * (2 - cc) * mueff) * y_w if hsig else 0.0)
        rank_mu = (y[order].T * w) @ y[order]
        cov = ((1 - c1 - cmu) * cov + c1 * (np.outer(pc, pc) + (0.0 if hsig else cc * (2 - cc)) * cov)
               + cmu * rank_mu)
        cov = (cov + cov.T) / 2
        sigma *= math.exp((cs / damps) * (ps_norm / chi_n - 1))
        if sigma * float(np.sqrt(np.max(d2))) < 1e-8:  # converged: spend no more of the budget
            break
    best = min(trace, key=lambda s: (s.value, s.evaluation))
    return SearchResult(best.x, best.value, tuple(trace))
