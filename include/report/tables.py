"""The report's numbers as tables: each builder turns the metrics document into rows of text.

Rows are plain strings (row 0 is the header); escaping is the renderer's job (report.md or HTML).
"""

from __future__ import annotations

import json
import numbers
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.report.document import (
        Config,
        Interval,
        MetricsDocument,
        Nightly,
        Pooled,
        Segment,
        Summary,
        TaskInstance,
    )

# The seed notebook's question: only there do its single-run figures belong next to ours.
SEED_DATASET, SEED_CLASSES = "Fashion-MNIST", ["Pullover", "T-shirt/top"]

# Typography of the report text: a true minus sign before a margin, alpha for the test level.
MINUS, ALPHA = "\N{MINUS SIGN}", "\N{GREEK SMALL LETTER ALPHA}"


def _number(x: Any) -> float | None:
    # History lines are read back from disk: anything but a number shows as missing.
    return float(x) if isinstance(x, numbers.Real) and not isinstance(x, bool) else None


def pct(x: Any, digits: int = 2) -> str:
    """A fraction as a percentage: 0.9624 -> '96.24%'."""
    v = _number(x)
    return "n/a" if v is None else f"{v * 100:.{digits}f}%"


def pts(x: Any) -> str:
    """A difference of fractions in percentage points, signed: 0.004 -> '+0.40'."""
    v = _number(x)
    return "n/a" if v is None else f"{v * 100:+.2f}"


def ci_text(mean: Any, low: Any, high: Any) -> str:
    """'+0.40 [-0.10, +0.90]' in points."""
    return f"{pts(mean)} [{pts(low)}, {pts(high)}]"


# A verdict kind as words; the only place that says it (reports, reports page, pooled text).
VERDICT_WORDS = {"improves": "transfer improves", "non_inferior": "not worse than scratch",
                 "worse": "transfer is worse", "no_difference": "no conclusion yet",
                 "inconclusive": "inconclusive (one seed)"}


def verdict_words(kind: Any, below_zero: Any = False) -> str:
    """'non_inferior' -> 'not worse than scratch'; below zero but inside the margin says so."""
    words = VERDICT_WORDS.get(str(kind), "no verdict recorded" if not kind else f"unknown verdict ({kind})")
    return f"{words}, but below zero (inside the margin)" if kind == "non_inferior" and below_zero is True else words


def pooled_verdict_text(kind: str, mean: float, low: float, high: float, n_seeds: int, n_nights: int,
                        confidence: float, margin: float, difference_range: float, n_outside: int) -> str:
    """The pooled verdict as a sentence: the headline of every report."""
    m = f"{MINUS}{margin * 100:.2f}"
    nums = (f"mean difference {pts(mean)} points, {confidence:.0%} anytime-valid interval [{pts(low)}, {pts(high)}] "
            f"over {n_seeds} seed{'s' if n_seeds != 1 else ''} from {n_nights} night{'s' if n_nights != 1 else ''}")
    text = {
        "improves": f"transfer learning improves test accuracy ({nums}).",
        "non_inferior": f"not worse than scratch ({nums}; the lower bound is above the {m}-point margin).",
        "worse": f"transfer learning is worse than scratch ({nums}).",
        "no_difference": f"no conclusion yet ({nums}); the interval still reaches below the {m}-point margin "
                         "and above zero. Each night narrows it.",
    }[kind]
    if kind == "non_inferior" and high < 0:
        text += (" The whole interval is below zero: transfer is worse than scratch, by less than the margin "
                 "the question allows.")
    assumption = f" It assumes every per-seed difference lies within ±{difference_range * 100:.2f} points"
    assumption += (f"; {n_outside} outside that range were clipped to its edge, so the interval is for the mean of "
                   "the clipped differences." if n_outside else " (none fell outside).")
    return f"Pooled verdict: {text}{assumption}"


def _ci(d: Interval | Pooled | Segment) -> str:
    return ci_text(d.mean, d.low, d.high)


def dataset_text(m: MetricsDocument) -> str:
    """'Fashion-MNIST (idx, 28x28, 10 classes)': what the data was, from the split manifest."""
    d = m.data.dataset
    if d is None:
        return str(m.data.source)
    shape = "x".join(str(n) for n in d.input_shape)
    return f"{d.name} ({d.format}, {shape}, {len(d.class_names)} classes)"


def task_text(m: MetricsDocument) -> str:
    """'Pullover vs T-shirt/top on Fashion-MNIST, mlp': the question and the network, for titles."""
    return f"{' vs '.join(m.data.target_names)} on {m.dataset_name}, {m.architecture}"


def is_seed_task(m: MetricsDocument) -> bool:
    """The seed notebook's own question (its dataset and its two classes): only there do its
    single-run figures belong next to ours."""
    return m.dataset_name == SEED_DATASET and sorted(m.config.target_classes) == SEED_CLASSES


def comparison_rows(m: MetricsDocument) -> list[list[str]]:
    rows = _comparison_rows(m)
    return rows if is_seed_task(m) else [r[:-1] for r in rows]


def _comparison_rows(m: MetricsDocument) -> list[list[str]]:
    h, sc, tr = m.headline, m.models.scratch, m.models.transfer
    ci, err, ni = h.difference, h.error_rate_reduction, h.noninferiority
    ref = h.seed_reference
    level = f"{ci.confidence:.0%}"

    def acc(s: Summary) -> str:
        a = s.test_accuracy
        return f"{pct(a.mean)} ± {a.sd * 100:.2f}"

    ni_txt = ("n/a (one seed)" if ni.p_value is None else
              f"{'holds' if ni.holds else 'does not hold'}: lower bound {pts(ni.lower_bound)} vs "
              f"{MINUS}{ni.margin * 100:.2f}; one-sided p = {ni.p_value:.3g}")
    err_txt = ("n/a" if err.mean is None else
               f"{pct(err.mean, 1)} [{pct(err.low, 1)}, {pct(err.high, 1)}]")
    arch = m.architecture
    return [
        ["", f"scratch {arch} (100%)", f"transfer {arch} ({h.transfer_fraction:.0%})", "seed notebook (1 run)"],
        ["training examples", f"{sc.n_train:,}", f"{tr.n_train:,}", "9,000 / 6,300"],
        ["test accuracy, mean ± sd over seeds", acc(sc), acc(tr),
         f"{pct(ref.scratch_accuracy)} / {pct(ref.transfer_accuracy)}"],
        ["test loss, mean", f"{sc.test_loss.mean:.4f}", f"{tr.test_loss.mean:.4f}", ""],
        ["epochs", _epochs(sc.epochs_run), _epochs(tr.epochs_run), "20 / 10+50"],
        ["fit seconds per phase, mean", _walls(sc.wall_seconds), _walls(tr.wall_seconds), ""],
        [f"difference (transfer {MINUS} scratch), points [{level} t CI]", "", _ci(ci), "+0.40"],
        # The notebook printed 11.9%, dividing by the transfer error; its stated formula gives 10.6%.
        [f"error-rate reduction [{level} t CI]", "", err_txt, "11.9% as printed (its formula: 10.6%)"],
        [f"non-inferiority, margin {ni.margin * 100:.2f} points", "", ni_txt, ""],
        ["seeds", str(ci.n), str(ci.n), "1"],
    ]


def _epochs(e: dict[str, int]) -> str:
    return " + ".join(f"{v} {k}" for k, v in e.items())


def _walls(w: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}s" for k, v in w.items())


def interval_note(m: MetricsDocument) -> str:
    h = m.headline
    ci, ni = h.difference, h.noninferiority
    level = f"{ci.confidence:.0%}"
    return (f"Intervals: {level} two-sided Student-t intervals over {ci.n} seeds (df = {ci.df}) of the paired "
            f"per-seed differences; the error-rate reduction uses the same t interval over its per-seed values. "
            f"Non-inferiority holds when the lower bound exceeds {MINUS}{ni.margin * 100:.2f} points, which is a "
            f"one-sided t test at {ALPHA} = {ni.one_sided_alpha:.1%}. McNemar: exact two-sided binomial test on the "
            f"test images exactly one of the two models got right, per seed.")


def per_seed_rows(m: MetricsDocument) -> list[list[str]]:
    h = m.headline
    sc, tr = m.models.scratch.per_seed, m.models.transfer.per_seed
    rows = [["seed", "scratch 100%", f"transfer {h.transfer_fraction:.0%}", "difference (points)",
             "error-rate reduction", "McNemar exact p (scratch-only / transfer-only correct)"]]
    for s in map(str, h.seeds):
        mc = h.mcnemar[s]
        rows.append([s, pct(sc[s].test_accuracy), pct(tr[s].test_accuracy), pts(h.difference.per_seed[s]),
                     pct(h.error_rate_reduction.per_seed[s], 1),
                     f"{mc.p_value:.3f} ({mc.a_only_correct} / {mc.b_only_correct})"])
    return rows


def accuracy_rows(m: MetricsDocument) -> list[list[str]]:
    """Test accuracy of every (model, fraction) for every seed."""
    seeds = [str(s) for s in m.config.seeds]
    rows = [["model", "fraction", "examples", *[f"seed {s}" for s in seeds], "mean ± sd"]]
    for r in m.accuracy_table:
        rows.append([r.model, f"{r.fraction:g}", f"{r.n_train:,}",
                     *[pct(r.per_seed.get(s)) for s in seeds], f"{pct(r.mean)} ± {r.sd * 100:.2f}"])
    return rows


def curve_rows(m: MetricsDocument) -> list[list[str]]:
    level = f"{m.config.confidence:.0%}"
    rows = [["fraction", "examples", "scratch", "transfer", f"difference [{level} t CI] (points)",
             "McNemar p per seed"]]
    for p in m.curve:
        rows.append([f"{p.fraction:g}", f"{p.n_train:,}",
                     pct(p.scratch.test_accuracy.mean), pct(p.transfer.test_accuracy.mean),
                     _ci(p.difference), ", ".join(f"{v.p_value:.2g}" for v in p.mcnemar.values())])
    return rows


def tta_rows(m: MetricsDocument) -> list[list[str]]:
    """Per seed, then the mean, for each headline model."""
    t = m.time_to_accuracy
    rows = [["model", "seed", f"epochs to val acc ≥ {t.target_val_accuracy:g}", "seconds to target",
             "epochs to best", "seconds to best", "best val acc"]]

    def f(v: float | None, d: int = 1) -> str:
        return "not reached" if v is None else f"{v:.{d}f}"

    for name, tm in t.models.items():
        for seed, v in tm.per_seed.items():
            rows.append([name, seed, f(v.epochs_to_target, 0), f(v.seconds_to_target),
                         f(v.epochs_to_best, 0), f(v.seconds_to_best), pct(v.best_val_accuracy)])
        mean = tm.mean
        reached = f"{tm.reached_target}/{tm.n_seeds} reached"
        rows.append([name, "mean", f(mean.epochs_to_target) + f" ({reached})",
                     f(mean.seconds_to_target), f(mean.epochs_to_best), f(mean.seconds_to_best),
                     pct(mean.best_val_accuracy)])
    return rows


HISTORY_FREE_TEXT = (0, 1, 6, 7)  # columns of history_rows holding text from disk: run, finished, verdicts


def history_rows(history: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["run", "finished", "seeds", "scratch", "transfer", "tonight's difference [t CI]",
             "tonight's t verdict", "pooled verdict then"]]
    for h in history:
        pool = h.get("pool") if isinstance(h.get("pool"), dict) else {}
        rows.append([str(h["run"]), str(h.get("finished_at", "")), str(h.get("n_seeds", "")),
                     pct(h.get("scratch_accuracy")), pct(h.get("transfer_accuracy")),
                     ci_text(h.get("diff_mean"), h.get("diff_low"), h.get("diff_high")),
                     verdict_words(h.get("verdict_kind")),
                     verdict_words(pool.get("verdict"), _below_zero(pool)) if pool else "not pooled"])
    return rows


def chunk_seeds(ti: TaskInstance, cfg: Config) -> list[int]:
    """The seeds a task instance trained: its map index counts chunks of seeds_per_task seeds
    (include/seeding.seed_chunks); an unmapped task (map index -1) has none."""
    from include.seeding import seed_chunks

    if ti.seeds is not None:
        return list(ti.seeds)
    chunks = seed_chunks(cfg.seeds, cfg.seeds_per_task)  # older files: the chunk from the config
    return chunks[ti.map_index] if 0 <= ti.map_index < len(chunks) else []


def task_instance_label(ti: TaskInstance, cfg: Config) -> str:
    """'chunk 0 (seeds 42, 43, 44)': what a mapped task instance's map index stands for."""
    if ti.map_index < 0:
        return ""
    seeds = chunk_seeds(ti, cfg)
    if not seeds:
        return f"map index {ti.map_index}"
    return f"chunk {ti.map_index} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"


def timing_rows(m: MetricsDocument) -> list[list[str]]:
    """Per task instance: Airflow's wall seconds (when known) and the model.fit seconds inside it.

    A mapped task's instance trains a chunk of seeds (seeds_per_task of them, as one batch), so
    its model.fit seconds are listed per seed of the chunk."""
    t = m.timings
    rows = [["task", "map index (seeds)", "state", "task wall seconds (Airflow)", "model.fit seconds per seed"]]
    if t is None:
        return rows
    fit = {(r.task_id, r.seed): r.fit_seconds for r in t.fit_seconds}
    if t.task_instances:
        for ti in t.task_instances:
            label = task_instance_label(ti, m.config)
            fits = [f"{fit[(ti.task_id, s)]:.1f}" for s in chunk_seeds(ti, m.config) if (ti.task_id, s) in fit]
            rows.append([ti.task_id, label, ti.state,
                         "n/a" if ti.duration_seconds is None else f"{ti.duration_seconds:.1f}", ", ".join(fits)])
    else:
        for (task_id, seed), v in fit.items():
            rows.append([task_id, f"seed {seed}", "", "n/a", f"{v:.1f}"])
    rows.append(["compare_report (this report)", "", "", f"{t.compare_report_seconds:.1f}", ""])
    return rows


def provenance_rows(m: MetricsDocument) -> list[list[str]]:
    prov = m.provenance
    dirty = " (with uncommitted changes)" if prov.git_dirty else ""
    rows = [["what", "value"], ["run id", m.run_id], ["git commit", str(prov.git_commit) + dirty],
            ["finished at", m.finished_at], ["python", str(prov.python)],
            ["platform", str(prov.platform)], ["dataset", dataset_text(m)],
            ["classes", " vs ".join(m.data.target_names)], ["architecture", m.architecture],
            ["data source", str(m.data.source)]]
    rows += [[f"package {k}", v] for k, v in prov.packages.items()]
    rows += [[f"sha256 {k}", v] for k, v in m.data.sha256.items()]
    return rows


def config_rows(m: MetricsDocument) -> list[list[str]]:
    return [["setting", "value"]] + [[k, json.dumps(v)] for k, v in sorted(m.config.model_dump(mode="json").items())]


def pooled_rows(p: Pooled) -> list[list[str]]:
    """The interval stored with each night of this segment (include/pooled.py), tonight last."""
    rows = [["night", "run", "new seeds", "seeds pooled", "mean, points", "anytime-valid interval, points",
             "verdict then"]]
    for n in p.nights:
        new = str(n.new_seeds) + ("" if n.counts_as_night else " (not a night: no new seed)")
        rows.append([str(n.night)[:16].replace("T", " "), str(n.run), new, str(n.n_seeds),
                     pts(n.mean), f"[{pts(n.low)}, {pts(n.high)}]",
                     verdict_words(n.verdict, n.high < 0)])
    return rows


def _below_zero(d: dict[str, Any]) -> bool:
    high = _number(d.get("high"))
    return high is not None and high < 0


def segment_rows(p: Pooled) -> list[list[str]]:
    """Each segment of the experiment with its latest stored interval."""
    rows = [["segment", "started", "latest run", "nights", "seeds", "interval, points", "verdict"]]
    for g in p.segments:
        rows.append([str(g.segment), str(g.started or ""), str(g.last_run), str(g.n_nights),
                     str(g.n_seeds), _ci(g), verdict_words(g.verdict, g.high is not None and g.high < 0)])
    return rows


def nightly_rows(n: Nightly) -> list[list[str]]:
    """This run's place among the nights: key, run type, seeds, sentinel and champion checks."""
    reg = n.regression
    champion = {"no_champion": "no champion yet", "other_data": "champion was trained on other data",
                "ok": "", "regressed": "REGRESSION: "}[reg.status]
    if reg.status in ("ok", "regressed"):
        champion += (f"best transfer model tonight {pct(reg.tonight)} vs champion {pct(reg.champion)} "
                     f"({pts(reg.gap)} points; alert below -{reg.margin * 100:.2f})")
    return [["", ""], ["experiment key", n.experiment_key], ["segment", str(n.pooled.segment)],
            ["run type", f"{n.run_type}" + (f", logical date {n.logical_date}" if n.logical_date else "")],
            ["seeds tonight", ", ".join(map(str, n.seeds)) + f" (sentinel {n.sentinel_seed})"],
            ["sentinel", n.sentinel.text], ["champion", champion]]
