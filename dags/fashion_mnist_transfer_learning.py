"""
### Transfer learning: does it learn as well from less data?

Reproduces and extends the seed experiment (`docs/experiment.md`): a network (`architecture`: the
seed's MLP by default, or a small CNN) is pretrained on every class except the two targets
(Fashion-MNIST's 8 by default, or any dataset named in `data_dir`: IDX, NPZ or an image folder); a
binary one (Pullover vs T-shirt/top by default) is trained from scratch; the pretrained body gets a
new sigmoid head and is trained in two phases (frozen body, then fine-tune) on a stratified fraction
of the binary training set.

Every model trains once per seed and, for the data-efficiency curve, once per training fraction; the
training tasks are mapped over chunks of `seeds_per_task` seeds, whose models train as one batch.
`compare_report` writes `reports/<run_id>/report.html`, `report.md` and `metrics.json` with the
verdict, confidence intervals and McNemar tests; `promote_champion` then blesses the best model only
if it beats the current champion. `apply_retention`, the run's teardown,
removes the run's scratch and, after a successful run, what the retention policy names.

XCom carries file paths and small metric dicts only. Heavy imports live inside the task bodies.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import (
    Asset,
    CronTriggerTimetable,
    DeadlineAlert,
    DeadlineReference,
    SyncCallback,
    TaskGroup,
    dag,
    get_current_context,
    task,
)

from include.operations import DEADLINE_AFTER, RUN_TIMEOUT, TRAINING_POOL
from tasks.dag_params import build_params
from tasks.notify import deadline_missed, include_succeeded_night, on_run_failure, on_task_failure, on_task_start

# The champion of whatever data the run read: each event's extra names its dataset and classes.
CHAMPION = Asset("tl://transfer-learning/champion")
# Reasons for the timeout, the deadline and the pool: include/operations.py.
TRAINING = {"execution_timeout": timedelta(hours=2), "pool": TRAINING_POOL}


def _ctx():
    """Validated config (with this run's seeds) and run-scoped paths; bad settings fail without retry."""
    from tasks.common import config_for_run, fail_fast, run_paths

    ctx = get_current_context()
    return fail_fast(lambda: (config_for_run(ctx), run_paths(ctx["run_id"])))()


@dag(
    dag_id="fashion_mnist_transfer_learning",
    # Nightly retrain at 02:00 UTC. No start_date and run_immediately=False: unpausing the DAG
    # waits for the next 02:00 instead of starting a full run at once for the missed night.
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC", run_immediately=False),
    catchup=False,
    max_active_runs=1,  # one run already uses every core of a small worker; a second would only queue
    max_active_tasks=8,
    dagrun_timeout=RUN_TIMEOUT,
    deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=DEADLINE_AFTER,
                           callback=SyncCallback(deadline_missed)),
    tags=["fashion-mnist", "transfer-learning", "keras"],
    default_args={
        "owner": "ml-platform",
        "retries": 2,  # transient failures only: bad data and bad params fail fast (AirflowFailException)
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": on_task_failure,  # after the last try only; off unless configured
        "on_execute_callback": on_task_start,  # says so at once when an alert setting is malformed
    },
    on_failure_callback=on_run_failure,
    on_success_callback=include_succeeded_night,  # a failed run cleared and re-run counts again
    params=build_params(),
    doc_md=__doc__,
)
def fashion_mnist_transfer_learning():
    @task(execution_timeout=timedelta(minutes=30))
    def split_data() -> list[dict]:
        """Validate the settings, read and verify the dataset once, write the splits as .npy.

        Returns one small job per chunk of seeds ({manifest path, seeds}): the input of the mapped tasks.
        """
        from tasks import split_data as step
        from tasks.common import fail_fast

        return fail_fast(lambda: step.run(*_ctx()))()

    @task(**TRAINING)
    def pretrain(job: dict) -> list[dict]:
        """The run's architecture on every class but the two targets, for each seed of the chunk."""
        from tasks.common import fail_fast
        from tasks.train import pretrain_chunk as step

        cfg, paths = _ctx()
        return fail_fast(step)(cfg, job, paths)

    @task(**TRAINING)
    def train_scratch(job: dict) -> list[dict]:
        """Binary model from scratch, for each seed of the chunk, on 100% and on every fraction's subset."""
        from tasks.common import fail_fast
        from tasks.train import scratch_for_chunk as step

        cfg, paths = _ctx()
        return fail_fast(step)(cfg, job, paths)

    @task(task_id="head", **TRAINING)
    def transfer_head(job: dict, pretrained: list[dict]) -> list[dict]:
        """Phase 1: each seed's pretrained body frozen, new sigmoid head trained, per fraction."""
        from tasks.common import fail_fast
        from tasks.train import head_for_chunk as step

        cfg, paths = _ctx()
        return fail_fast(step)(cfg, job, pretrained, paths)

    @task(task_id="finetune", **TRAINING)
    def transfer_finetune(job: dict, heads: list[dict]) -> list[dict]:
        """Phase 2: every layer unfrozen, recompiled, fine-tuned, per fraction."""
        from tasks.common import fail_fast
        from tasks.train import finetune_for_chunk as step

        cfg, paths = _ctx()
        return fail_fast(step)(cfg, job, heads, paths)

    @task(execution_timeout=timedelta(minutes=30))
    def compare_report(jobs: list, scratch: list, transfer: list) -> dict:
        """Statistics over seeds, plots, verdict; metrics.json + report.md + report.html."""
        from tasks import compare_report as step
        from tasks.common import fail_fast

        cfg, paths = _ctx()
        ctx = get_current_context()

        def flat(seq) -> list:
            # Index by length: iterating a lazy XCom sequence probes one past the end and logs a 404.
            return [r for i in range(len(seq)) for r in seq[i]]

        from tasks.nightly import run_info
        from tasks.notify import send_findings

        out = fail_fast(step.run)(cfg, jobs[0]["manifest"], flat(scratch), flat(transfer), paths, ctx["run_id"],
                                  timings=step.airflow_timings(ctx), info=run_info(ctx))
        send_findings(ctx, "compare_report", out["findings"], paths.run)  # regression, sentinel drift
        return out

    @task(outlets=[CHAMPION])
    def promote_champion(report: dict) -> dict:
        """Gate: bless the run's best model only if it beats the current champion."""
        from tasks import promote as step
        from tasks.common import fail_fast

        cfg, paths = _ctx()
        decision = fail_fast(step.run)(cfg, report, paths)
        if not decision["promoted"]:  # skipped: no asset event, the champion is untouched
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"Not promoted: {decision['reason']}")
        get_current_context()["outlet_events"][CHAMPION].extra = {
            **{k: decision["champion"][k] for k in ("run_id", "seed", "test_accuracy", "model_path")},
            **step.data_labels(report)}
        return decision

    @task(execution_timeout=timedelta(minutes=30))
    def apply_retention() -> dict:
        """Teardown: remove this run's scratch; after a successful run, apply the retention policy."""
        from tasks import retention as step
        from tasks.common import run_paths

        ctx = get_current_context()
        # Files younger than the longest task timeout may belong to a task still running.
        grace = max(t.execution_timeout for t in ctx["dag"].tasks if t.execution_timeout)
        return step.run(run_paths(ctx["run_id"]), step.run_failed(ctx), step.policy_for(ctx["params"], grace))

    jobs = split_data()
    pretrained = pretrain.expand(job=jobs)
    scratch = train_scratch.expand(job=jobs)
    with TaskGroup("transfer", tooltip="Two phases: frozen body, then fine-tune"):
        # zip pairs each seed's job with that seed's pretrained model (same map index).
        heads = transfer_head.expand_kwargs(jobs.zip(pretrained).map(lambda p: {"job": p[0], "pretrained": p[1]}))
        tuned = transfer_finetune.expand_kwargs(jobs.zip(heads).map(lambda p: {"job": p[0], "heads": p[1]}))
    report = compare_report(jobs=jobs, scratch=scratch, transfer=tuned)
    promoted = promote_champion(report)
    # A teardown: runs once every task is done, failed ones included, and leaves the run's state to
    # the others. split_data is its setup, so clearing any task re-creates the scratch it removes.
    [pretrained, scratch, tuned, report, promoted] >> apply_retention().as_teardown(setups=jobs)

fashion_mnist_transfer_learning()
