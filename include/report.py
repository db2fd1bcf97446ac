"""Render the metrics document as markdown (task log, report.md) and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
import re
from typing import Any

import numpy as np


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x * 100:.{digits}f}%"


def pts(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.2f}"


def _ci(d: dict[str, Any]) -> str:
    return f"{pts(d['mean'])} [{pts(d['low'])}, {pts(d['high'])}]"


def comparison_rows(m: dict[str, Any]) -> list[list[str]]:
    h, sc, tr = m["headline"], m["models"]["scratch"], m["models"]["transfer"]
    ci, err, ni = h["difference"], h["error_rate_reduction"], h["noninferiority"]
    ref = h["seed_reference"]
    level = f"{ci['confidence']:.0%}"

    def acc(s: dict[str, Any]) -> str:
        a = s["test_accuracy"]
        return f"{pct(a['mean'])} ± {a['sd'] * 100:.2f}"

    ni_txt = ("n/a (one seed)" if ni["p_value"] is None else
              f"{'holds' if ni['holds'] else 'does not hold'}: lower bound {pts(ni['lower_bound'])} vs "
              f"−{ni['margin'] * 100:.2f}; one-sided p = {ni['p_value']:.3g}")
    err_txt = ("n/a" if err["mean"] is None else
               f"{pct(err['mean'], 1)} [{pct(err['low'], 1)}, {pct(err['high'], 1)}]")
    return [
        ["", "scratch (100%)", f"transfer ({h['transfer_fraction']:.0%})", "seed notebook (1 run)"],
        ["training examples", f"{sc['n_train']:,}", f"{tr['n_train']:,}", "9,000 / 6,300"],
        ["test accuracy, mean ± sd over seeds", acc(sc), acc(tr),
         f"{pct(ref['scratch_accuracy'])} / {pct(ref['transfer_accuracy'])}"],
        ["test loss, mean", f"{sc['test_loss']['mean']:.4f}", f"{tr['test_loss']['mean']:.4f}", ""],
        ["epochs", _epochs(sc["epochs_run"]), _epochs(tr["epochs_run"]), "20 / 10+50"],
        ["fit seconds per phase, mean", _walls(sc["wall_seconds"]), _walls(tr["wall_seconds"]), ""],
        [f"difference (transfer − scratch), points [{level} t CI]", "", _ci(ci), "+0.40"],
        # The notebook printed 11.9%, dividing by the transfer error; its stated formula gives 10.6%.
        [f"error-rate reduction [{level} t CI]", "", err_txt, "11.9% as printed (its formula: 10.6%)"],
        [f"non-inferiority, margin {ni['margin'] * 100:.2f} points", "", ni_txt, ""],
        ["seeds", str(ci["n"]), str(ci["n"]), "1"],
    ]


def _epochs(e: dict[str, int]) -> str:
    return " + ".join(f"{v} {k}" for k, v in e.items())


def _walls(w: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}s" for k, v in w.items())


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~!])")  # inline markup; text never starts a line here


def md_text(value: Any) -> str:
    """Free text (run ids, history lines) as literal markdown: one line, inline markup escaped, so no
    link, image, HTML tag, code span or table cell can be injected. Callers never put it at a line start."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def _md_cell(cell: str) -> str:
    # A raw pipe or a newline would break the row; pipes md_text already escaped stay as they are.
    return re.sub(r"(\\.)|\|", lambda m: m.group(1) or "\\|", " ".join(cell.split()))


def md_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(map(_md_cell, rows[0])) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows[1:]]
    return "\n".join(out)


def per_seed_rows(m: dict[str, Any]) -> list[list[str]]:
    h = m["headline"]
    sc, tr = m["models"]["scratch"]["per_seed"], m["models"]["transfer"]["per_seed"]
    rows = [["seed", "scratch 100%", f"transfer {h['transfer_fraction']:.0%}", "difference (points)",
             "error-rate reduction", "McNemar exact p (scratch-only / transfer-only correct)"]]
    for s in h["seeds"]:
        s = str(s)
        mc = h["mcnemar"][s]
        rows.append([s, pct(sc[s]["test_accuracy"]), pct(tr[s]["test_accuracy"]), pts(h["difference"]["per_seed"][s]),
                     pct(h["error_rate_reduction"]["per_seed"][s], 1),
                     f"{mc['p_value']:.3f} ({mc['a_only_correct']} / {mc['b_only_correct']})"])
    return rows


def accuracy_rows(m: dict[str, Any]) -> list[list[str]]:
    """Test accuracy of every (model, fraction) for every seed."""
    seeds = [str(s) for s in m["config"]["seeds"]]
    rows = [["model", "fraction", "examples", *[f"seed {s}" for s in seeds], "mean ± sd"]]
    for r in m["accuracy_table"]:
        rows.append([r["model"], f"{r['fraction']:g}", f"{r['n_train']:,}",
                     *[pct(r["per_seed"].get(s)) for s in seeds], f"{pct(r['mean'])} ± {r['sd'] * 100:.2f}"])
    return rows


def curve_rows(m: dict[str, Any]) -> list[list[str]]:
    level = f"{m['config']['confidence']:.0%}"
    rows = [["fraction", "examples", "scratch", "transfer", f"difference [{level} t CI] (points)",
             "McNemar p per seed"]]
    for p in m["curve"]:
        rows.append([f"{p['fraction']:g}", f"{p['n_train']:,}",
                     pct(p["scratch"]["test_accuracy"]["mean"]), pct(p["transfer"]["test_accuracy"]["mean"]),
                     _ci(p["difference"]), ", ".join(f"{v['p_value']:.2g}" for v in p["mcnemar"].values())])
    return rows


def tta_rows(m: dict[str, Any]) -> list[list[str]]:
    """Per seed, then the mean, for each headline model."""
    t = m["time_to_accuracy"]
    rows = [["model", "seed", f"epochs to val acc ≥ {t['target_val_accuracy']:g}", "seconds to target",
             "epochs to best", "seconds to best", "best val acc"]]

    def f(v: float | None, d: int = 1) -> str:
        return "not reached" if v is None else f"{v:.{d}f}"

    for name, tm in t["models"].items():
        for seed, v in tm["per_seed"].items():
            rows.append([name, seed, f(v["epochs_to_target"], 0), f(v["seconds_to_target"]),
                         f(v["epochs_to_best"], 0), f(v["seconds_to_best"]), pct(v["best_val_accuracy"])])
        mean = tm["mean"]
        reached = f"{tm['reached_target']}/{tm['n_seeds']} reached"
        rows.append([name, "mean", f(mean["epochs_to_target"]) + f" ({reached})",
                     f(mean["seconds_to_target"]), f(mean["epochs_to_best"]), f(mean["seconds_to_best"]),
                     pct(mean["best_val_accuracy"])])
    return rows


def history_rows(history: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["run", "finished", "seeds", "scratch", "transfer", "difference [CI]", "verdict"]]
    for h in history:
        rows.append([str(h["run"]), str(h.get("finished_at", "")), str(h.get("n_seeds", "")),
                     pct(h.get("scratch_accuracy")), pct(h.get("transfer_accuracy")),
                     f"{pts(h.get('diff_mean'))} [{pts(h.get('diff_low'))}, {pts(h.get('diff_high'))}]",
                     str(h.get("verdict_kind", ""))])
    return rows


def timing_rows(m: dict[str, Any]) -> list[list[str]]:
    """Per task instance: Airflow's wall seconds (when known) and the model.fit seconds inside it."""
    t = m["timings"]
    fit = {(r["task_id"], r["seed"]): r["fit_seconds"] for r in t["fit_seconds"]}
    rows = [["task", "seed", "state", "task wall seconds (Airflow)", "model.fit seconds"]]
    if t["task_instances"]:
        for ti in t["task_instances"]:
            seed = ti.get("seed")
            rows.append([ti["task_id"], "" if seed is None else str(seed), ti["state"],
                         "n/a" if ti["duration_seconds"] is None else f"{ti['duration_seconds']:.1f}",
                         f"{fit[(ti['task_id'], seed)]:.1f}" if (ti["task_id"], seed) in fit else ""])
    else:
        for (task_id, seed), v in fit.items():
            rows.append([task_id, str(seed), "", "n/a", f"{v:.1f}"])
    rows.append(["compare_report (this report)", "", "", f"{t['compare_report_seconds']:.1f}", ""])
    return rows


def _interval_note(m: dict[str, Any]) -> str:
    h = m["headline"]
    ci, ni = h["difference"], h["noninferiority"]
    level = f"{ci['confidence']:.0%}"
    return (f"Intervals: {level} two-sided Student-t intervals over {ci['n']} seeds (df = {ci['df']}) of the paired "
            f"per-seed differences; the error-rate reduction uses the same t interval over its per-seed values. "
            f"Non-inferiority holds when the lower bound exceeds −{ni['margin'] * 100:.2f} points, which is a "
            f"one-sided t test at α = {ni['one_sided_alpha']:.1%}. McNemar: exact two-sided binomial test on the "
            f"test images exactly one of the two models got right, per seed.")


def render_markdown(m: dict[str, Any], history: list[dict[str, Any]] | None = None) -> str:
    history = m.get("trend") if history is None else history
    parts = [f"# Transfer learning report: {md_text(m['run_id'])}", "", f"**Verdict.** {m['verdict']['text']}", "",
             "## Comparison", "", md_table(comparison_rows(m)), "", _interval_note(m), "",
             "## Per seed", "", md_table(per_seed_rows(m)), "",
             "## Test accuracy of every model, fraction and seed", "", md_table(accuracy_rows(m)), "",
             "## Data efficiency (same stratified subset for both models)", "", md_table(curve_rows(m)), "",
             "## Time to accuracy", "", md_table(tta_rows(m)), ""]
    if history:  # earlier runs' lines are data from disk: escaped like the run id
        rows = history_rows(history)
        free_text = (0, 1, 6)  # run, finished, verdict
        rows[1:] = [[md_text(c) if i in free_text else c for i, c in enumerate(r)] for r in rows[1:]]
        parts += ["## Recent runs", "", md_table(rows), ""]
    if "timings" in m:
        parts += ["## Timings", "", md_table(timing_rows(m)), ""]
    prov = m.get("provenance", {})
    parts += ["## Provenance", "", f"- run id: {md_text(m['run_id'])}", f"- git commit: `{prov.get('git_commit')}`",
              f"- packages: {', '.join(f'{k} {v}' for k, v in prov.get('packages', {}).items())}",
              *[f"- data `{k}` sha256 `{v}`" for k, v in m["data"]["sha256"].items()], ""]
    return "\n".join(parts)


# -- figures -------------------------------------------------------------------------------------
def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def learning_curve_summary(histories: list[dict[str, Any]], key: str = "val_accuracy") -> dict[str, Any]:
    """Per-epoch mean, min and max over seeds of one model's histories (both phases, in order)."""
    curves = [[r[key] for ph in h["phases"] for r in ph["epochs"]] for h in histories]
    n = min(len(c) for c in curves)
    a = np.array([c[:n] for c in curves])
    return {"metric": key, "n_seeds": len(curves), "epoch": list(range(1, n + 1)), "mean": a.mean(0).tolist(),
            "min": a.min(0).tolist(), "max": a.max(0).tolist(),
            "phases": [{"phase": ph["phase"].split("[")[0], "epochs": len(ph["epochs"])} for ph in histories[0]["phases"]]}


def figure_learning_curves(curves: dict[str, dict[str, Any]], head_epochs: int) -> str:
    """Validation accuracy per epoch (learning_curve_summary); band = min..max over seeds; transfer phases marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    colors = {"scratch": "tab:blue", "transfer": "tab:orange"}
    for name, c in curves.items():
        color = colors.get(name, "tab:gray")
        ax.plot(c["epoch"], c["mean"], label=f"{name} (mean of {c['n_seeds']})", color=color)
        ax.fill_between(c["epoch"], c["min"], c["max"], color=color, alpha=0.2)
    ax.axvspan(0.5, head_epochs + 0.5, color="tab:orange", alpha=0.07, label="transfer phase 1: body frozen")
    ax.axvline(head_epochs + 0.5, color="tab:orange", ls="--", lw=1)
    ax.text(head_epochs + 1, ax.get_ylim()[0], " phase 2: fine-tune", color="tab:orange", va="bottom")
    ax.set_xlabel("epoch (transfer: head epochs, then fine-tune epochs)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("mean over seeds; band = min..max over seeds", fontsize=9)
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
            label="comparison point: scratch 100%")
    ax.plot([tr["n_train"]], [tr["test_accuracy"]["mean"]], "*", ms=16, color="tab:orange",
            label=f"comparison point: transfer {h['transfer_fraction']:.0%}")
    ref = h["seed_reference"]  # the seed notebook's own single run, at its own sizes
    ax.plot([full["n_train"]], [ref["scratch_accuracy"]], "s", mfc="none", ms=9, color="tab:blue",
            label="seed notebook, 1 run: scratch 100%")
    ax.plot([round(full["n_train"] * ref["transfer_fraction"])], [ref["transfer_accuracy"]], "s", mfc="none", ms=9,
            color="tab:orange", label="seed notebook, 1 run: transfer 70%")
    ax.set_xscale("log")
    ax.set_xlabel("training examples (log scale)")
    ax.set_title("mean over seeds; band = ± 1 sd over seeds", fontsize=9)
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
def _html_table(rows: list[list[str]], cls: str = "") -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows[1:])
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.verdict{font-size:1.2em;padding:.8em 1em;border-left:6px solid #e69500;background:#fff8ec}
.verdict.improves,.verdict.non_inferior{border-color:#2a9d2a;background:#f0fff0}
table.kv td{text-align:left;font-family:ui-monospace,monospace;font-size:.9em}img{max-width:100%}"""


def _provenance_html(m: dict[str, Any]) -> str:
    import json

    e = html.escape
    prov = m.get("provenance", {})
    rows = [["what", "value"], ["run id", m["run_id"]], ["git commit", str(prov.get("git_commit")) + (" (with uncommitted changes)" if prov.get("git_dirty") else "")],
            ["finished at", m.get("finished_at", "")], ["python", str(prov.get("python"))],
            ["platform", str(prov.get("platform"))], ["data source", str(m["data"]["source"])]]
    rows += [[f"package {k}", v] for k, v in prov.get("packages", {}).items()]
    rows += [[f"sha256 {k}", v] for k, v in m["data"]["sha256"].items()]
    out = [_html_table(rows, "kv")]
    t = m.get("timings")
    if t:
        out += [f"<h3>Timings</h3><p>DAG run started {e(str(t['dag_run_started_at']))}, report finished "
                f"{e(t['report_finished_at'])}"
                + (f", {t['run_elapsed_seconds']:.0f} s in all" if t["run_elapsed_seconds"] is not None else "")
                + (f". Airflow task timings unavailable: {e(str(t['task_instances_error']))}"
                   if t["task_instances_error"] else "") + ".</p>",
                _html_table(timing_rows(m))]
    out += ["<h3>Configuration</h3>",
            _html_table([["setting", "value"]] + [[k, json.dumps(v)] for k, v in sorted(m["config"].items())], "kv")]
    return "\n".join(out)


def render_html(m: dict[str, Any], figures: dict[str, str], history: list[dict[str, Any]] | None = None) -> str:
    """One self-contained page: inline CSS, images as data: URIs, no script, no network."""
    history = m.get("trend") if history is None else history
    e = html.escape
    v = m["verdict"]
    h = m["headline"]
    sections = [
        f"<h1>Transfer learning report: {e(m['run_id'])}</h1>",
        f'<p class="verdict {e(v["kind"])}" id="verdict"><strong>Verdict.</strong> {e(v["text"])}</p>',
        f"<p>Question: does transfer learning let a model learn as well from less data? Target classes: "
        f"{e(' vs '.join(m['config']['target_classes']))}. Headline comparison: {e(h['comparison'])}, "
        f"paired by seed.</p>",
        "<h2>Comparison</h2>", _html_table(comparison_rows(m)), f"<p>{e(_interval_note(m))}</p>",
        "<h2>Per seed</h2>", _html_table(per_seed_rows(m)),
        "<h2>Learning curves</h2>", _img(figures["learning_curves"], "learning curves"),
        f"<p>Validation accuracy per epoch, scratch on 100% and transfer on {h['transfer_fraction']:.0%}. "
        "Shaded orange span: transfer phase 1 (body frozen, new head); dashed line: start of phase 2 "
        "(all layers unfrozen, recompiled).</p>",
        "<h2>Data efficiency</h2>", _img(figures["data_efficiency"], "data efficiency"),
        "<p>Test accuracy against training examples (log scale); both models train on the same stratified "
        "subset per seed and fraction. Stars: this run's comparison point (transfer at "
        f"{h['transfer_fraction']:.0%} vs scratch at 100%); open squares: the seed notebook's single run.</p>",
        _html_table(curve_rows(m)),
        "<h3>Test accuracy of every model, fraction and seed</h3>", _html_table(accuracy_rows(m)),
        "<h2>Confusion matrices</h2>", _img(figures["confusion"], "confusion matrices"),
        "<h2>Time to accuracy</h2>", _html_table(tta_rows(m)),
        "<p>Epochs and seconds (model.fit wall time) until the validation accuracy first reaches the target, "
        "and until the model's own best. Transfer counts both phases and excludes pretraining, which is paid "
        "once and reused; a mean is given only when every seed reached the target.</p>",
    ]
    if history:
        sections += [f"<h2>Recent runs (last {len(history)})</h2>", _html_table(history_rows(history))]
    sections += ["<h2>Provenance</h2>", _provenance_html(m)]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>Transfer learning report {e(m['run_id'])}</title><style>{CSS}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")
