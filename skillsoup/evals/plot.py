"""PNG plot of an :class:`~skillsoup.evals.report.ICLReport`: mean accuracy and NLL against k,
one line per method (matplotlib, Agg backend; the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path

from skillsoup.evals.report import K_METHODS, ICLEvalError, ICLReport, PlotUnavailableError

_STYLES = {
    "prompt": dict(marker="o", linewidth=4, alpha=0.5),
    "state": dict(marker="x", linewidth=1.5, linestyle="--"),
    "mean-mix": dict(marker="s", linewidth=1.5),
    "decay-mix": dict(marker="^", linewidth=1.5),
}


def require_matplotlib():
    """pyplot on the Agg backend, or a PlotUnavailableError that names the install command."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailableError(
            "--plot needs matplotlib, which is not installed; pip install matplotlib (or pip install 'skillsoup[plot]')"
        ) from None
    matplotlib.use("Agg", force=True)  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def check_plot_path(path: str | Path) -> Path:
    """A .png path in an existing folder, checked before any work is done."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ICLEvalError(f"--plot {path}: give a file name ending in .png")
    if not path.parent.is_dir():
        raise ICLEvalError(f"--plot {path}: folder {path.parent} does not exist; create it first")
    return path


def plot_report(report: ICLReport, path: str | Path) -> Path:
    """Write the plot to ``path`` (.png) and return it. k-methods start from zero-shot at k=0 (no
    demonstrations: prompt and state are both the query alone); zero-shot and router are flat lines."""
    path = check_plot_path(path)
    plt = require_matplotlib()
    mean = report.mean
    zero = next((s for s in mean if s.method == "zero-shot"), None)
    fig, (acc_ax, nll_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    try:
        for method in K_METHODS:
            points = sorted((s.k, s.accuracy, s.nll) for s in mean if s.method == method)
            if not points:
                continue
            if zero is not None and 0 in report.ks:
                points.insert(0, (0, zero.accuracy, zero.nll))
            ks, acc, nll = zip(*points)
            style = _STYLES[method]  # distinct markers and widths: equal methods (prompt, state) overlap
            acc_ax.plot(ks, acc, label=method, **style)
            nll_ax.plot(ks, nll, label=method, **style)
        for s in mean:
            if s.method in ("zero-shot", "router"):
                style = dict(linestyle="--" if s.method == "zero-shot" else ":", label=s.method,
                             color="grey" if s.method == "zero-shot" else "black")
                acc_ax.axhline(s.accuracy, **style)
                nll_ax.axhline(s.nll, **style)
        for ax, name in ((acc_ax, "exact-match accuracy"), (nll_ax, "NLL per output token (nats)")):
            ax.set_xlabel("demonstrations k")
            ax.set_ylabel(name)
            if report.ks:
                ax.set_xticks(report.ks)
            ax.grid(alpha=0.3)
        acc_ax.set_ylim(-0.02, 1.02)
        nll_ax.legend(fontsize=8)
        n_skills = len(report.skills)
        fig.suptitle(f"{Path(report.model).name or report.model}: mean over {n_skills} skill{'s' * (n_skills != 1)}")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
