"""Render the metrics document as markdown (task log, report.md) and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x * 100:.{digits}f}%"


def pts(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.2f}"


def comparison_rows(m: dict[str, Any]) -> list[list[str]]:
    h, sc, tr = m["headline"], m["models"]["scratch"], m["models"]["transfer"]
    ci, err = h["difference"], h["error_rate_reduction"]
    ref = h["seed_reference"]
    def acc(s: dict[str, Any]) -> str:
        a = s["test_accuracy"]
        return f"{pct(a['mean'])} ± {a['sd'] * 100:.2f}"
    return [
        ["", "scratch (100%)", f"transfer ({h['transfer_fraction']:.0%})", "seed notebook (1 run)"],
        ["training examples", f"{sc['n_train']:,}", f"{tr['n_train']:,}", "9,000 / 6,300"],
        ["test accuracy, mean ± sd", acc(sc), acc(tr),
         f"{pct(ref['scratch_accuracy'])} / {pct(ref['transfer_accuracy'])}"],
        ["test loss, mean", f"{sc['test_loss']['mean']:.4f}", f"{tr['test_loss']['mean']:.4f}", ""],
        ["epochs", _epochs(sc["epochs_run"]), _epochs(tr["epochs_run"]), "20 / 10+50"],
        ["wall seconds per phase, mean", _walls(sc["wall_seconds"]), _walls(tr["wall_seconds"]), ""],
        ["difference (transfer − scratch), points", "", f"{pts(ci['mean'])} [{pts(ci['low'])}, {pts(ci['high'])}]",
         "+0.40"],
        ["error-rate reduction", "", f"{pct(err['mean'], 1)} [{pct(err['low'], 1)}, {pct(err['high'], 1)}]", "11.9%"],
    ]


def _epochs(e: dict[str, int]) -> str:
    return " + ".join(f"{v} {k}" for k, v in e.items())


def _walls(w: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}s" for k, v in w.items())


def md_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def per_seed_rows(m: dict[str, Any]) -> list[list[str]]:
    h = m["headline"]
    sc, tr = m["models"]["scratch"]["per_seed"], m["models"]["transfer"]["per_seed"]
    rows = [["seed", "scratch", "transfer", "difference (points)", "error-rate reduction", "McNemar p (exact)"]]
    for s in h["seeds"]:
        s = str(s)
        mc = h["mcnemar"][s]
        rows.append([s, pct(sc[s]["test_accuracy"]), pct(tr[s]["test_accuracy"]), pts(h["difference"]["per_seed"][s]),
                     pct(h["error_rate_reduction"]["per_seed"][s], 1),
                     f"{mc['p_value']:.3f} ({mc['a_only_correct']} vs {mc['b_only_correct']})"])
    return rows


def curve_rows(m: dict[str, Any]) -> list[list[str]]:
    rows = [["fraction", "examples", "scratch", "transfer", "difference [CI] (points)"]]
    for p in m["curve"]:
        d = p["difference"]
        rows.append([f"{p['fraction']:g}", f"{p['n_train']:,}",
                     pct(p["scratch"]["test_accuracy"]["mean"]), pct(p["transfer"]["test_accuracy"]["mean"]),
                     f"{pts(d['mean'])} [{pts(d['low'])}, {pts(d['high'])}]"])
    return rows


def tta_rows(m: dict[str, Any]) -> list[list[str]]:
    rows = [["model", f"epochs to val acc ≥ {m['config']['target_val_accuracy']:g}", "seconds to target",
             "epochs to best", "seconds to best", "best val acc", "seeds reaching target"]]
    for name, t in m["time_to_accuracy"].items():
        mean = t["mean"]
        f = lambda v, d=1: "not reached" if v is None else f"{v:.{d}f}"  # noqa: E731
        rows.append([name, f(mean["epochs_to_target"]), f(mean["seconds_to_target"]), f(mean["epochs_to_best"]),
                     f(mean["seconds_to_best"]), pct(mean["best_val_accuracy"]),
                     f"{t['reached_target']}/{len(t['per_seed'])}"])
    return rows


def history_rows(history: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["run", "finished", "seeds", "scratch", "transfer", "difference [CI]", "verdict"]]
    for h in history:
        rows.append([h["run"], h.get("finished_at", ""), str(h.get("n_seeds", "")), pct(h.get("scratch_accuracy")),
                     pct(h.get("transfer_accuracy")), f"{pts(h.get('diff_mean'))} [{pts(h.get('diff_low'))}, "
                     f"{pts(h.get('diff_high'))}]", h.get("verdict_kind", "")])
    return rows


def render_markdown(m: dict[str, Any], history: list[dict[str, Any]] | None = None) -> str:
    parts = [f"# Transfer learning report: {m['run_id']}", "", f"**Verdict.** {m['verdict']['text']}", "",
             "## Comparison", "", md_table(comparison_rows(m)), "",
             f"Interval: {m['headline']['difference']['method']} over seeds; error-rate reduction: "
             f"{m['headline']['error_rate_reduction']['method']}.", "",
             "## Per seed", "", md_table(per_seed_rows(m)), "",
             "## Data efficiency (same stratified subset for both models)", "", md_table(curve_rows(m)), "",
             "## Time to accuracy", "", md_table(tta_rows(m)), ""]
    if history:
        parts += ["## Recent runs", "", md_table(history_rows(history)), ""]
    return "\n".join(parts)


# -- figures -------------------------------------------------------------------------------------
def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _band(ax: Any, curves: list[list[float]], label: str, color: str) -> None:
    n = min(len(c) for c in curves)
    a = np.array([c[:n] for c in curves])
    x = np.arange(1, n + 1)
    mean, lo, hi = a.mean(0), a.min(0), a.max(0)
    ax.plot(x, mean, label=f"{label} (mean of {len(curves)})", color=color)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2)


def figure_learning_curves(histories: dict[str, list[dict[str, Any]]], head_epochs: int) -> str:
    """Validation accuracy per epoch; band = min..max over seeds; transfer phases marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    colors = {"scratch": "tab:blue", "transfer": "tab:orange"}
    for name, hs in histories.items():
        curves = [[r["val_accuracy"] for ph in h["phases"] for r in ph["epochs"]] for h in hs]
        if curves:
            _band(ax, curves, name, colors.get(name, "tab:gray"))
    ax.axvspan(0.5, head_epochs + 0.5, color="tab:orange", alpha=0.07, label="transfer phase 1: body frozen")
    ax.axvline(head_epochs + 0.5, color="tab:orange", ls="--", lw=1)
    ax.text(head_epochs + 1, ax.get_ylim()[0], " phase 2: fine-tune", color="tab:orange", va="bottom")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def figure_data_efficiency(m: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    full = m["models"]["scratch"]
    for name, color in (("scratch", "tab:blue"), ("transfer", "tab:orange")):
        pts_ = [(p["n_train"], p[name]["test_accuracy"]) for p in m["curve"]]
        if name == "scratch":
            pts_.append((full["n_train"], full["test_accuracy"]))
        pts_.sort(key=lambda t: t[0])
        x = np.array([p[0] for p in pts_])
        mean = np.array([p[1]["mean"] for p in pts_])
        sd = np.array([p[1]["sd"] for p in pts_])
        ax.plot(x, mean, "o-", color=color, label=f"{name} (mean ± sd over seeds)")
        ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2)
    h = m["headline"]
    tr = m["models"]["transfer"]
    ax.plot([full["n_train"]], [full["test_accuracy"]["mean"]], "*", ms=16, color="tab:blue",
            label="seed's comparison: scratch 100%")
    ax.plot([tr["n_train"]], [tr["test_accuracy"]["mean"]], "*", ms=16, color="tab:orange",
            label=f"seed's comparison: transfer {h['transfer_fraction']:.0%}")
    ax.set_xscale("log")
    ax.set_xlabel("training examples (log scale)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def figure_confusion(matrices: dict[str, np.ndarray], labels: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 3.8))
    for ax, (name, cm) in zip(np.atleast_1d(axes), matrices.items()):
        ConfusionMatrixDisplay(cm, display_labels=labels).plot(ax=ax, colorbar=False, values_format="d")
        ax.set_title(f"{name} (summed over seeds)")
    fig.tight_layout()
    return _png(fig)


# -- HTML ----------------------------------------------------------------------------------------
def _html_table(rows: list[list[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.verdict{font-size:1.2em;padding:.8em 1em;border-left:6px solid #e69500;background:#fff8ec}
.verdict.improves,.verdict.non_inferior{border-color:#2a9d2a;background:#f0fff0}
pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.85em}img{max-width:100%}"""


def render_html(m: dict[str, Any], figures: dict[str, str], history: list[dict[str, Any]] | None = None) -> str:
    """One self-contained page: inline CSS, images as data: URIs, no script, no network."""
    import json

    e = html.escape
    v = m["verdict"]
    sections = [
        f"<h1>Transfer learning report: {e(m['run_id'])}</h1>",
        f'<p class="verdict {e(v["kind"])}" id="verdict"><strong>Verdict.</strong> {e(v["text"])}</p>',
        f"<p>Question: does transfer learning let a model learn as well from less data? Target classes: "
        f"{e(' vs '.join(m['config']['target_classes']))}. {e(m['headline']['comparison'])}.</p>",
        "<h2>Comparison</h2>", _html_table(comparison_rows(m)),
        f"<p>Interval: {e(m['headline']['difference']['method'])} over seeds at "
        f"{m['config']['confidence']:.0%}; error-rate reduction: {e(m['headline']['error_rate_reduction']['method'])}; "
        f"McNemar: exact binomial test on discordant test predictions.</p>",
        "<h2>Per seed</h2>", _html_table(per_seed_rows(m)),
        "<h2>Learning curves</h2>", _img(figures["learning_curves"], "learning curves"),
        "<h2>Data efficiency</h2>", _img(figures["data_efficiency"], "data efficiency"), _html_table(curve_rows(m)),
        "<h2>Confusion matrices</h2>", _img(figures["confusion"], "confusion matrices"),
        "<h2>Time to accuracy</h2>", _html_table(tta_rows(m)),
        "<p>Transfer times count both phases and exclude pretraining, which is paid once and reused.</p>",
    ]
    if history:
        sections += ["<h2>Recent runs</h2>", _html_table(history_rows(history))]
    prov = {k: m[k] for k in ("run_id", "provenance", "data", "config") if k in m}
    sections += ["<h2>Provenance</h2>", f"<pre>{e(json.dumps(prov, indent=2, sort_keys=True))}</pre>"]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>Transfer learning report {e(m['run_id'])}</title><style>{CSS}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")
