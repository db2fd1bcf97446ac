"""docker-compose.yaml, validated without a Docker engine: parsed, interpolated as Compose does, checked.

Cost: well under a second.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.local_stack import LOCATION_KEYS, OPERATOR_KEYS, SHARED_ENV_FILE, LocalStack, read_env_file

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
SERVICES = {"postgres", "redis", "mlflow", "airflow-init", *AIRFLOW_SERVICES}
SECRETS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
           "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD"}
ARTIFACT_VOLUME = "tl-artifacts"
KERAS_CACHE_VOLUME = "tl-keras-cache"

# Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}.
_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                  r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name = m["name"] or m["bare"]
        value, op, arg = env.get(name), m["op"], m["arg"]
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":?", "?") and unset:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and unset:
            return arg
        if op in (":+", "+"):
            return "" if unset else arg
        return value or ""

    return _VAR.sub(sub, text)


def load(env: Mapping[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env))


def env_example() -> dict[str, str]:
    return read_env_file(ROOT / ".env.example")


def filled_env() -> dict[str, str]:
    return {**env_example(), **{name: f"test-{name.lower()}" for name in SECRETS}}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(filled_env())


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_services_follow_the_official_layout(compose: dict) -> None:
    assert set(compose["services"]) == SERVICES
    for name, command in AIRFLOW_SERVICES.items():
        svc = compose["services"][name]
        assert svc["command"] == command, name
        assert svc["build"] == "." and svc["image"], f"{name} must run the project image built from the Dockerfile"
    for name, svc in compose["services"].items():
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in _env(svc), f"{name}: bake requirements into the image"


def test_celery_executor_from_the_shared_env_file(compose: dict) -> None:
    shared = read_env_file()
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert shared["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert shared["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        svc = compose["services"][name]
        assert [ROOT / f for f in svc["env_file"]] == [SHARED_ENV_FILE], name
        assert not set(_env(svc)) & set(shared), f"{name} overrides a shared setting; change deploy/airflow.env"
        assert _env(svc)["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert _env(svc)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")


def test_environment_is_the_one_the_local_distributed_test_uses(compose: dict, tmp_path: Path) -> None:
    """Same keys as deploy/local_stack.py (values differ by place), same shared file."""
    common = _env(compose["x-airflow-common"])
    assert set(common) == set(LOCATION_KEYS) | set(OPERATOR_KEYS)
    stack = LocalStack(tmp_path)  # not started: only its environment is built
    local = stack.env()
    assert set(stack.location_env()) == set(LOCATION_KEYS)
    assert {k: local[k] for k in read_env_file()} == read_env_file()
    for name in AIRFLOW_SERVICES:
        assert set(common) <= set(_env(compose["services"][name])), name
    # Extras beyond the common block are container plumbing only.
    assert set(_env(compose["services"]["airflow-worker"])) - set(common) == {"DUMB_INIT_SETSID"}


def test_every_long_running_service_has_a_health_check(compose: dict) -> None:
    for name, svc in compose["services"].items():
        if name == "airflow-init":  # one-shot; the others wait for it to complete successfully
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name} has no health check"
        # Under Podman a CMD argument holding spaces reached the container split into words (mlflow's
        # `python -c "..."` check failed with a SyntaxError): one word per argument, or CMD-SHELL.
        assert test[0] == "CMD-SHELL" or not any(" " in arg for arg in test[1:]), f"{name}: use CMD-SHELL"
    for name in AIRFLOW_SERVICES:
        deps = compose["services"][name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy", name
    assert compose["services"]["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    assert "8974/health" in " ".join(compose["services"]["airflow-scheduler"]["healthcheck"]["test"])
    assert "inspect ping" in " ".join(compose["services"]["airflow-worker"]["healthcheck"]["test"])
    # The container's own name, on every engine: Podman sets no HOSTNAME variable (`make e2e-compose`).
    for name in ("airflow-worker", "airflow-dag-processor", "airflow-triggerer"):
        test = " ".join(compose["services"][name]["healthcheck"]["test"])
        assert "$(hostname)" in test and "HOSTNAME" not in test, name


def test_workers_scale(compose: dict) -> None:
    """`--scale airflow-worker=N` needs no fixed container name and no host port on the worker."""
    worker = compose["services"]["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert all("container_name" not in svc for svc in compose["services"].values())


def test_one_named_artifact_volume_shared_by_every_airflow_container(compose: dict) -> None:
    assert ARTIFACT_VOLUME in compose["volumes"]
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        svc = compose["services"][name]
        root = _env(svc)["TL_ARTIFACT_ROOT"]
        mounts = [v for v in svc["volumes"] if v.split(":")[1] == root]
        assert mounts == [f"{ARTIFACT_VOLUME}:{root}"], f"{name}: artifact root must be the named volume, read-write"


def test_code_is_mounted_and_importable(compose: dict) -> None:
    for name in AIRFLOW_SERVICES:
        svc = compose["services"][name]
        env, volumes = _env(svc), svc["volumes"]
        project = env["PYTHONPATH"]
        for folder in ("dags", "tasks", "include", "plugins"):
            assert (ROOT / folder).is_dir()
            assert f"./{folder}:{project}/{folder}:ro" in volumes, f"{name}: {folder}/ not mounted"
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{project}/dags"
        assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == f"{project}/plugins"


def test_dataset_is_mounted_read_only_from_inside_the_project(compose: dict) -> None:
    """Default ./data/fashion-mnist (Docker Desktop refuses system folders; rootful Docker would create a
    missing host folder empty and root-owned); the Debian package's folder is an opt-in."""
    for name in AIRFLOW_SERVICES:
        mounts = [v for v in compose["services"][name]["volumes"] if ":/usr/share/datasets/fashion-mnist" in v]
        assert mounts == ["./data/fashion-mnist:/usr/share/datasets/fashion-mnist:ro"], name
    opted_in = load({**filled_env(), "TL_DATASET_DIR": "/usr/share/datasets/fashion-mnist"})
    assert "/usr/share/datasets/fashion-mnist:/usr/share/datasets/fashion-mnist:ro" in \
        opted_in["services"]["airflow-worker"]["volumes"]
    assert "make compose-data" in (ROOT / ".env.example").read_text()
    assert re.search(r"^compose-data:", (ROOT / "Makefile").read_text(), re.M)


def test_compose_data_fills_the_default_folder(tmp_path: Path) -> None:
    """`make compose-data`'s script copies the four IDX files, readable by any AIRFLOW_UID."""
    from include.data import FILES, read_idx
    from tests.synthetic import write_tiny_fashion_mnist

    source = write_tiny_fashion_mnist(tmp_path / "source")
    dest = tmp_path / "project" / "data" / "fashion-mnist"
    run = subprocess.run(["bash", str(ROOT / "scripts" / "compose_data.sh"), str(dest)], capture_output=True,
                         text=True, env={**os.environ, "TL_DATA_DIR": str(source)})
    assert run.returncode == 0, run.stderr
    assert f"copied from {source}" in run.stdout
    for name in FILES.values():
        assert read_idx(dest / name)[1] == read_idx(source / name)[1]
        assert (dest / name).stat().st_mode & 0o004, f"{name} must be world-readable"
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES.values()), "no temporary file left"


def test_keras_download_cache_is_one_shared_named_volume(compose: dict) -> None:
    """The loader's fallback downloads into ~/.keras of the airflow user: once for every worker."""
    from include.data import KERAS_CACHE_DIR

    relative = KERAS_CACHE_DIR.relative_to(Path.home()).parts[0]  # ".keras"
    assert KERAS_CACHE_VOLUME in compose["volumes"]
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        assert f"{KERAS_CACHE_VOLUME}:/home/airflow/{relative}" in compose["services"][name]["volumes"], name
    # A fresh named volume is root-owned: airflow-init hands it to AIRFLOW_UID with the artifact root.
    init = compose["services"]["airflow-init"]["command"][-1]
    assert re.search(r'chown -R "50000:0" .*/home/airflow/\.keras', init)


def test_compose_refuses_to_start_without_each_secret() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text))
    assert required == SECRETS
    assert not re.search(r"\$\{(" + "|".join(SECRETS) + r"):?-", text), "a secret must never have a default"
    with pytest.raises(MissingVariable):
        load(env_example())  # .env.example as committed: every secret empty
    for name in SECRETS:
        with pytest.raises(MissingVariable, match=name):
            load({**filled_env(), name: ""})
    resolved = yaml.safe_dump(load(filled_env()))
    assert "test-airflow_admin_password" in resolved and not re.search(r"\$\{\w+:\?", resolved)


def test_no_password_or_secret_literal_is_committed(compose: dict) -> None:
    example = env_example()
    assert set(example) >= SECRETS and all(example[name] == "" for name in SECRETS)
    raw = yaml.safe_load(interpolate(COMPOSE.read_text(), {**filled_env(), **dict.fromkeys(SECRETS, "<unset>")}))
    secretish = re.compile(r"PASSWORD|SECRET|FERNET|REDISCLI_AUTH")
    for name, svc in raw["services"].items():
        for key, value in _env(svc).items():
            if secretish.search(key):
                assert value == "<unset>", f"{name}.{key} must come from .env, not a literal"
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked == "" and ".env" in (ROOT / ".gitignore").read_text().split()


def test_redis_requires_its_password(compose: dict) -> None:
    redis = compose["services"]["redis"]
    assert "--requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDISCLI_AUTH"] == "test-redis_password"
    broker = _env(compose["services"]["airflow-worker"])["AIRFLOW__CELERY__BROKER_URL"]
    assert broker == "redis://:test-redis_password@redis:6379/0"


def test_redis_execs_the_image_entrypoint_to_drop_root(compose: dict) -> None:
    """`sh -c 'exec redis-server'` would keep root; the image's entry point drops to the redis user
    (`make e2e-compose` checks the uid of the running server)."""
    command = compose["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-c"] and command[2].startswith("exec docker-entrypoint.sh redis-server ")


def test_dockerfile_builds_from_slim_airflow_with_airflow_pinned_and_checked() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    arg = re.fullmatch(r"ARG AIRFLOW_BASE_IMAGE=(\S+)", lines[0])
    assert arg and re.fullmatch(r"apache/airflow:slim-3\.3\.\d+-python3\.11", arg[1]), lines[0]
    assert lines[1] == "FROM ${AIRFLOW_BASE_IMAGE}"
    first_run = next(i for i, line in enumerate(lines) if line.startswith("RUN"))
    run = " ".join(line.rstrip("\\").strip() for line in lines[first_run:])
    install, _, after = run.partition("&&")
    # Airflow pinned to the base image's own version in the same resolve as the requirements.
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in install
    assert "-r /opt/airflow/project/requirements.txt" in install
    assert "-c /opt/airflow/project/constraints.txt" in install
    assert after.strip() == "pip check"
    code = "\n".join(lines)
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in code and "_PIP_ADDITIONAL_REQUIREMENTS" not in env_example()
    # The image gets only the run-time set: requirements.txt and constraints.txt, not the test set.
    assert "requirements-test" not in code
    copied = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert copied == ["!requirements.txt", "!constraints.txt", "!deploy/compose/mlflow/"]


def test_image_requirements_have_no_test_packages_and_one_tensorflow_per_platform() -> None:
    """tensorflow-cpu has no aarch64 wheel and Airflow's images are multi-arch: the markers pick one."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    reqs = [Requirement(line.split("#")[0]) for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.split("#")[0].strip() and not line.startswith("-")]
    names = {r.name for r in reqs}
    assert not names & {"pytest", "pytest-timeout", "playwright", "pytest-xdist"}, names
    for machine in ("x86_64", "aarch64"):
        env = {**default_environment(), "sys_platform": "linux", "platform_machine": machine}
        tf = [r.name for r in reqs if r.name in ("tensorflow", "tensorflow-cpu")
              and (r.marker is None or r.marker.evaluate(env))]
        assert tf == (["tensorflow-cpu"] if machine == "x86_64" else ["tensorflow"]), (machine, tf)


def test_task_queued_timeout_covers_the_training_tasks_timeout() -> None:
    """It also bounds the queued task's Execution API token: a training task queued behind others must
    not time out before one training task's worth of waiting."""
    from tests.conftest import load_dag

    dag = load_dag()
    training = {t.task_id: t.execution_timeout for t in dag.tasks
                if t.task_id.startswith(("pretrain", "train_scratch", "transfer."))}
    assert training and all(training.values()), training
    queued = float(read_env_file()["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"])
    assert queued == max(t.total_seconds() for t in training.values())


def _init_script(compose: dict) -> str:
    """airflow-init's shell script up to the part that needs a container (mkdir, chown, exec)."""
    script = compose["services"]["airflow-init"]["command"][-1]
    return script[:script.index("mkdir -p /opt/airflow/logs")]


@pytest.mark.parametrize("small", [True, False], ids=["small-machine", "big-machine"])
def test_airflow_init_warns_on_small_machines(compose: dict, tmp_path: Path, small: bool) -> None:
    """The official file's checks, run for real with getconf, df and /proc/stat answered by stubs."""
    pages, cpus, disk_kb = (262_144, 1, 1_048_576) if small else (4_194_304, 4, 104_857_600)  # 1 GiB/1/1 GiB
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in {
        "getconf": f'[ "$1" = _PHYS_PAGES ] && echo {pages} || echo 4096',
        "df": f'echo "Filesystem 1K-blocks Used Available Use% Mounted on"; echo "overlay 1 1 {disk_kb} 1% /"',
        "grep": f'[ "${{@: -1}}" = /proc/stat ] && echo {cpus} || exec /bin/grep "$@"',
    }.items():
        (stubs / name).write_text(f"#!/bin/bash\n{body}\n")
        (stubs / name).chmod(0o755)
    run = subprocess.run(["bash", "-c", _init_script(compose)], capture_output=True, text=True,
                         env={"PATH": f"{stubs}:/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stdout.splitlines() if line.startswith("WARNING!!!")]
    if small:
        assert [w.split(":")[1].strip() for w in warnings] == [
            "Not enough memory available for Docker.", "Not enough CPUS available for Docker.",
            "Not enough Disk space available for Docker.", "You have not enough resources to run Airflow (see above)!"]
        assert "You have 1.0G" in run.stdout and "You have 1\n" in run.stdout
    else:
        assert warnings == []
    assert re.search(r"^Resources: \S+ memory, \d+ CPUs, \S+ disk$", run.stdout, re.M)


def test_airflow_uid_is_documented_as_id_u_on_linux(compose: dict) -> None:
    example = (ROOT / ".env.example").read_text()
    block = example[:example.index("\nAIRFLOW_UID=")].rsplit("\n\n", 1)[-1]
    assert "Linux" in block and "id -u" in block
    assert "id -u" in (ROOT / "docs" / "deployment.md").read_text()
    assert compose["services"]["airflow-worker"]["user"] == "50000:0"


def test_every_variable_compose_reads_is_documented() -> None:
    used = {m["name"] or m["bare"] for m in _VAR.finditer(COMPOSE.read_text()) if not m["escaped"]}
    assert {"TL_IMAGE_NAME", "TL_DATASET_DIR", "AIRFLOW_UID", "TL_API_HOST_PORT"} <= used
    docs = (ROOT / "docs" / "deployment.md").read_text()
    example = env_example()
    for name in used:
        assert name in example, f"{name} is missing from .env.example"
        assert f"`{name}`" in docs, f"{name} is not described in docs/deployment.md"


def test_e2e_override_substitutes_only_images_and_the_base_build_arg() -> None:
    """`make e2e-compose` changes images and test-only timings (cron off, heartbeat and health-check
    timeouts), never the production services' commands, checks, mounts or settings."""
    override = yaml.safe_load((ROOT / "deploy" / "compose" / "e2e.override.yaml").read_text())
    services = override["services"]
    assert set(services) == SERVICES
    for name in ("postgres", "redis"):
        assert set(services[name]) == {"image"}, name
    base = "${TL_E2E_BASE_IMAGE:?set by scripts/e2e_compose.py}"
    assert services["mlflow"] == {"build": {"context": ".", "dockerfile": "deploy/compose/mlflow/Dockerfile",
                                            "args": {"MLFLOW_BASE_IMAGE": base}},
                                  "healthcheck": {"timeout": "300s"}}
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        svc = services[name]
        assert set(svc) == {"build", "environment", "healthcheck"}, name
        assert svc["build"]["context"] == "." and set(svc["build"]["args"]) == {"AIRFLOW_BASE_IMAGE"}
        assert set(svc["environment"]) == {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE",
                                           "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"}
        assert set(svc["healthcheck"]) == {"timeout"}, "the checks themselves are the production ones"


def test_e2e_compose_says_in_one_line_what_is_missing(tmp_path: Path) -> None:
    """No engine on PATH: one line naming the tools and how to install them, exit 1."""
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python3").symlink_to(os.path.realpath(os.sys.executable))
    run = subprocess.run([os.sys.executable, str(ROOT / "scripts" / "e2e_compose.py")], capture_output=True,
                         text=True, env={**os.environ, "PATH": str(bare)})
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("e2e-compose: podman, docker-compose, debootstrap not found: install with")


def test_e2e_compose_says_in_one_line_that_the_port_is_taken(tmp_path: Path) -> None:
    import socket

    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("podman", "docker-compose", "debootstrap"):  # present; the port check comes first
        (stubs / tool).write_text("#!/bin/sh\nexit 0\n")
        (stubs / tool).chmod(0o755)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([os.sys.executable, str(ROOT / "scripts" / "e2e_compose.py")], capture_output=True,
                             text=True, env={**os.environ, "PATH": f"{stubs}:/usr/bin:/bin", "TL_E2E_PORT": str(port)})
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == (f"e2e-compose: port {port} is in use: stop what listens there or pick another one "
                          f"with TL_E2E_PORT=<free port> make e2e-compose.\n")


def _e2e_compose_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("e2e_compose", ROOT / "scripts" / "e2e_compose.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_e2e_compose_finds_an_artifact_read_across_workers_whenever_both_ran_tasks() -> None:
    """The layout of a real CI run: each seed chunk stayed on one worker from pretrain to fine-tune, so
    no model crossed; the split arrays and the predictions did. All on one worker: nothing crosses."""
    e2e = _e2e_compose_module()
    on = {"split_data": "A", "pretrain[0]": "A", "pretrain[1]": "B", "train_scratch[0]": "A", "train_scratch[1]": "B",
          "transfer.head[0]": "A", "transfer.head[1]": "B", "transfer.finetune[0]": "A", "transfer.finetune[1]": "B",
          "compare_report": "A", "promote_champion": "B", "apply_retention": "A"}

    def tis(hosts: dict[str, str]) -> list[dict[str, Any]]:
        return [{"task_id": name.split("[")[0], "map_index": int(name[-2]) if "[" in name else -1, "hostname": host}
                for name, host in hosts.items()]

    assert sorted(e2e.cross_worker_reads(tis(on))) == [
        ("compare_report", "promote_champion"), ("split_data", "pretrain[1]"), ("split_data", "train_scratch[1]"),
        ("train_scratch[1]", "compare_report"), ("transfer.finetune[1]", "compare_report")]
    assert e2e.cross_worker_reads(tis(dict.fromkeys(on, "A"))) == []


def test_alerts_and_threads_reach_every_airflow_container_and_are_off_or_default_when_empty() -> None:
    """Alert settings and threads per task come from .env; as .env.example leaves them, alerts are off and
    threads per task fall back to the worker's cores over its slots (an empty TL_TF_THREADS)."""
    from deploy.local_stack import OPERATOR_KEYS

    wanted = {"TL_ALERT_EMAIL_TO", "TL_ALERT_WEBHOOK_URL", "AIRFLOW__API__BASE_URL", "TL_TF_THREADS"}
    assert wanted <= set(OPERATOR_KEYS)
    default = load(filled_env())
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        env = _env(default["services"][name])
        assert env["TL_ALERT_EMAIL_TO"] == env["TL_ALERT_WEBHOOK_URL"] == env["TL_TF_THREADS"] == "", name
        assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:8080", name
    hook = "https://u:" + "p@hooks.example.com/x?key=k&token=t"
    env = _env(load({**filled_env(), "TL_ALERT_WEBHOOK_URL": hook, "TL_TF_THREADS": "3"})["services"]["airflow-worker"])
    assert env["TL_ALERT_WEBHOOK_URL"] == hook and env["TL_TF_THREADS"] == "3"


def test_mlflow_server_has_its_own_image_a_postgres_database_a_volume_and_a_health_check(compose: dict) -> None:
    svc = compose["services"]["mlflow"]
    assert svc["build"] == {"context": ".", "dockerfile": "deploy/compose/mlflow/Dockerfile"} and svc["image"]
    assert _env(svc)["MLFLOW_BACKEND_STORE_URI"] == "postgresql://airflow:" + "test-postgres_password@postgres/mlflow"
    assert svc["volumes"] == ["mlflow-artifacts:/mlflow/artifacts"] and "mlflow-artifacts" in compose["volumes"]
    assert "/health" in " ".join(svc["healthcheck"]["test"]) and svc["depends_on"]["postgres"]["condition"] == \
        "service_healthy"
    dockerfile = (ROOT / "deploy" / "compose" / "mlflow" / "Dockerfile").read_text()
    pins = (ROOT / "deploy" / "compose" / "mlflow" / "requirements.txt").read_text()
    assert "pip check" in dockerfile and "-c /opt/mlflow/constraints.txt" in dockerfile and "USER mlflow" in dockerfile
    assert "mlflow==3.17.2" in pins and "mlflow==3.17.2" in (ROOT / "constraints.txt").read_text()
    # Every Airflow container logs there by default; an empty MLFLOW_TRACKING_URI in .env turns it off.
    for name in AIRFLOW_SERVICES:
        assert _env(compose["services"][name])["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
    off = load({**filled_env(), "MLFLOW_TRACKING_URI": ""})
    assert _env(off["services"]["airflow-worker"])["MLFLOW_TRACKING_URI"] == ""


def test_e2e_compose_finds_what_is_wrong_with_a_runs_mlflow_record() -> None:
    """The check behind `make e2e-compose`'s MLflow assertions, on REST API-shaped answers."""
    from scripts import e2e_compose

    run = {"info": {"run_id": "r1"}, "data": {"tags": [{"key": "verdict.kind"}, {"key": "pooled.verdict.kind"}]}}
    points = [{"step": 42}, {"step": 7}]
    assert e2e_compose.mlflow_problems([run], points, [42, 7], {"version": "1"}) == []
    assert e2e_compose.mlflow_problems([run, run], points + points, [42, 7], None) == [
        "2 MLflow runs for the Airflow run, expected 1",
        "test accuracy logged for seeds [7, 7, 42, 42], expected each of [7, 42] once",
        "no model version has the alias champion"]
    bare = {"info": {"run_id": "r1"}, "data": {}}
    assert e2e_compose.mlflow_problems([bare], points, [42, 7], {"version": "1"}) == [
        "the run lacks tonight's or the pooled verdict"]
