"""Multinomial logistic regression in numpy (L-BFGS from scipy): the trainer of the skill classifier.

    minimise  sum_i w_i * CE(softmax(x_i @ W + b), y_i) / sum_i w_i  +  l2 / 2 * ||W - W0||^2

``W0`` is a prior for the weights (the skills' prototypes, so an unregularised direction falls back
to nearest-prototype routing instead of to zero); the bias is not penalised. ``fit_softmax_ref`` is
the same objective written plainly (loops over samples) for the tests.
"""

from __future__ import annotations

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax_rows(z: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(z))


def objective(theta: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray, w0: np.ndarray,
              l2: float) -> tuple[float, np.ndarray]:
    """Loss and gradient at ``theta`` = concat(W.ravel(), b); ``w`` sums to 1."""
    d, k = w0.shape
    weights, bias = theta[: d * k].reshape(d, k), theta[d * k :]
    logp = log_softmax(x @ weights.astype(x.dtype) + bias.astype(x.dtype))  # [n, k]
    rows = np.arange(len(y))
    loss = -float(w @ logp[rows, y].astype(np.float64)) + 0.5 * l2 * float(((weights - w0) ** 2).sum())
    g = np.exp(logp)
    g[rows, y] -= 1.0
    g *= w[:, None].astype(g.dtype)
    grad_w = (x.T @ g).astype(np.float64) + l2 * (weights - w0)
    return loss, np.concatenate([grad_w.ravel(), g.sum(axis=0, dtype=np.float64)])


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, w0: np.ndarray | None = None,
                sample_weight: np.ndarray | None = None, max_iter: int = 200,
                init: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(W [d, k], b [k]) minimising the objective of the module docstring. ``init`` warm-starts
    (e.g. from the model of another fold)."""
    from scipy.optimize import minimize

    x = np.asarray(x, np.float32)  # the matrix products in float32: twice as fast, and the data is float32
    y = np.asarray(y, np.int64)
    d = x.shape[1]
    w0 = np.zeros((d, n_classes)) if w0 is None else np.asarray(w0, np.float64)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    w = w / w.sum()
    start = np.concatenate([w0.ravel(), np.zeros(n_classes)]) if init is None else \
        np.concatenate([np.asarray(init[0], np.float64).ravel(), np.asarray(init[1], np.float64)])
    res = minimize(objective, start, args=(x, y, w, w0, l2), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": 1e-6})
    return res.x[: d * n_classes].reshape(d, n_classes), res.x[d * n_classes :]


def objective_ref(weights: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray,
                  w0: np.ndarray, l2: float) -> float:
    """The loss of :func:`objective`, one sample at a time."""
    loss = 0.0
    for xi, yi, wi in zip(x, y, w):
        z = xi @ weights + bias
        loss -= wi * (z[yi] - z.max() - np.log(np.sum(np.exp(z - z.max()))))
    return float(loss + 0.5 * l2 * np.sum((weights - w0) ** 2))
