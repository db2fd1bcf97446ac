"""docker-compose.yaml, validated without a Docker engine: parsed, interpolated as Compose does, checked.

Cost: well under a second.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Mapping

import pytest
import yaml

from deploy.local_stack import LOCATION_KEYS, SHARED_ENV_FILE, LocalStack, read_env_file

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
SERVICES = {"postgres", "redis", "airflow-init", *AIRFLOW_SERVICES}
SECRETS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
           "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD"}
ARTIFACT_VOLUME = "tl-artifacts"

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
    assert set(common) == set(LOCATION_KEYS)
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
    for name in AIRFLOW_SERVICES:
        deps = compose["services"][name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy", name
    assert compose["services"]["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    assert "8974/health" in " ".join(compose["services"]["airflow-scheduler"]["healthcheck"]["test"])
    assert "inspect ping" in " ".join(compose["services"]["airflow-worker"]["healthcheck"]["test"])


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


def test_dataset_is_mounted_read_only(compose: dict) -> None:
    for name in AIRFLOW_SERVICES:
        mounts = [v for v in compose["services"][name]["volumes"] if ":/usr/share/datasets/fashion-mnist" in v]
        assert len(mounts) == 1 and mounts[0].endswith(":ro"), name


def test_compose_refuses_to_start_without_each_secret() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text))
    assert required == SECRETS
    assert not re.search(r"\$\{(%s):?-" % "|".join(SECRETS), text), "a secret must never have a default"
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
    raw = yaml.safe_load(interpolate(COMPOSE.read_text(), {**filled_env(), **{n: "<unset>" for n in SECRETS}}))
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


def test_dockerfile_bakes_in_the_pinned_requirements() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert re.fullmatch(r"FROM apache/airflow:3\.3\.\d+(-python3\.\d+)?", lines[0])
    install = next(line for line in lines if line.startswith("RUN pip install"))
    assert "-r /opt/airflow/project/requirements.txt" in install
    assert "-c /opt/airflow/project/constraints.txt" in install
    assert not any("_PIP_ADDITIONAL_REQUIREMENTS" in line for line in lines)
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env_example()
