"""The report's figures (matplotlib, Agg backend), each returned as base64 PNG for a data: URI.

They draw numbers the metrics document already holds (include/evidence.py computes them) and name
the dataset, its classes and the architecture from it."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from include.report.tables import is_seed_task, task_text

if TYPE_CHECKING:
    from include.report.document import LearningCurves, MetricsDocument, Pooled


def _pyplot() -> Any:
    """pyplot on the Agg backend: tasks run headless, and matplotlib loads only when a report is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def report_figures(m: MetricsDocument) -> dict[str, str]:
    """Every figure of the report, by name, as base64 PNG."""
    cms, frac, title = m.confusion_matrices, m.headline.transfer_fraction, task_text(m)
    return {
        "learning_curves": figure_learning_curves(m.learning_curves, m.config.head_epochs, title),
        "data_efficiency": figure_data_efficiency(m),
        "confusion": figure_confusion({"scratch 100%": np.array(cms.scratch.summed),
                                       f"transfer {frac:.0%}": np.array(cms.transfer.summed)}, cms.labels, title),
        "pooled": figure_pooled(m.nightly.pooled),
    }


def figure_learning_curves(curves: LearningCurves, head_epochs: int, title: str = "") -> str:
    """Validation accuracy per epoch (evidence.learning_curve_summary); band = min..max over seeds;
    transfer phases marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    colors = {"scratch": "tab:blue", "transfer": "tab:orange"}
    for name in ("scratch", "transfer"):
        c, color = getattr(curves, name), colors[name]
        ax.plot(c.epoch, c.mean, label=f"{name} (mean of {c.n_seeds})", color=color)
        ax.fill_between(c.epoch, c.min, c.max, color=color, alpha=0.2)
    ax.axvspan(0.5, head_epochs + 0.5, color="tab:orange", alpha=0.07, label="transfer phase 1: body frozen")
    ax.axvline(head_epochs + 0.5, color="tab:orange", ls="--", lw=1)
    ax.text(head_epochs + 1, ax.get_ylim()[0], " phase 2: fine-tune", color="tab:orange", va="bottom")
    ax.set_xlabel("epoch (transfer: head epochs, then fine-tune epochs)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{title}\nmean over seeds; band = min..max over seeds".lstrip(), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def figure_data_efficiency(m: MetricsDocument) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    full = m.models.scratch
    for name, color in (("scratch", "tab:blue"), ("transfer", "tab:orange")):
        pts_ = [(p.n_train, getattr(p, name).test_accuracy) for p in m.curve]
        if name == "scratch":
            pts_.append((full.n_train, full.test_accuracy))
        pts_.sort(key=lambda t: t[0])
        x = np.array([p[0] for p in pts_])
        mean = np.array([p[1].mean for p in pts_])
        sd = np.array([p[1].sd for p in pts_])
        ax.plot(x, mean, "o-", color=color, label=f"{name} (mean ± sd over seeds)")
        ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2)
    h = m.headline
    tr = m.models.transfer
    ax.plot([full.n_train], [full.test_accuracy.mean], "*", ms=16, color="tab:blue",
            label="comparison point: scratch 100%")
    ax.plot([tr.n_train], [tr.test_accuracy.mean], "*", ms=16, color="tab:orange",
            label=f"comparison point: transfer {h.transfer_fraction:.0%}")
    ref = h.seed_reference  # the seed notebook's own single run, at its own sizes, on its own question
    if is_seed_task(m):
        ax.plot([full.n_train], [ref.scratch_accuracy], "s", mfc="none", ms=9, color="tab:blue",
                label="seed notebook, 1 run: scratch 100%")
        ax.plot([round(full.n_train * ref.transfer_fraction)], [ref.transfer_accuracy], "s", mfc="none",
                ms=9, color="tab:orange", label="seed notebook, 1 run: transfer 70%")
    ax.set_xscale("log")
    ax.set_xlabel(f"{m.dataset_name} training examples (log scale)")
    ax.set_title(f"{task_text(m)}\nmean over seeds; band = ± 1 sd over seeds", fontsize=9)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def figure_confusion(matrices: dict[str, np.ndarray], labels: list[str], title: str = "") -> str:
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 3.8))
    for ax, (name, cm) in zip(np.atleast_1d(axes), matrices.items(), strict=True):
        ConfusionMatrixDisplay(cm, display_labels=labels).plot(ax=ax, colorbar=False, values_format="d")
        ax.set_title(f"{name} (summed over seeds)")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def figure_pooled(p: Pooled) -> str:
    """The pooled interval after each night (include/pooled.py), zero and the non-inferiority margin marked."""
    plt = _pyplot()
    nights = p.nights
    x = np.arange(1, len(nights) + 1)
    low, high, mean = (np.array([getattr(n, k) for n in nights]) * 100 for k in ("low", "high", "mean"))
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    ax.fill_between(x, low, high, color="tab:orange", alpha=0.2, label=f"{p.confidence:.0%} anytime-valid interval")
    ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="o-", color="tab:orange", ms=4, capsize=4,
                label="pooled mean and interval after the night")
    ax.axhline(0, color="black", lw=1, label="zero (no difference)")
    ax.axhline(-p.margin * 100, color="tab:red", ls="--", lw=1,
               label=f"non-inferiority margin (-{p.margin * 100:.2f} points)")
    if len(x) <= 12:
        ax.set_xticks(x, [f"{i}\n{n.n_seeds} seeds" for i, n in zip(x, nights)])
    ax.set_xlabel("night (seeds pooled so far)")
    ax.set_ylabel("transfer - scratch (accuracy points)")
    ax.set_title(f"experiment {p.experiment_key}: pooled evidence, night after night", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)
