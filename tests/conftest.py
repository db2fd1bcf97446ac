import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "dags")]

# A private Airflow home per test session (SQLite), set before anything imports airflow.
_AF_HOME = Path(tempfile.mkdtemp(prefix="tl-test-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(_AF_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "TF_CPP_MIN_LOG_LEVEL": "2",
})
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


# Test tiers (pytest.ini). Tests in these folders are `unit` unless they carry another tier's marker.
TIERS = ("unit", "airflow", "training", "services", "browser")
UNIT_FOLDERS = ("unit", "dags")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give unit-folder tests their default tier, and refuse a test without a tier or with `unit`
    next to another tier, so that `-m unit` selects exactly the fast checks."""
    problems = []
    for item in items:
        tiers = {m.name for m in item.iter_markers()} & set(TIERS)
        if not tiers and item.path.parent.name in UNIT_FOLDERS:
            item.add_marker(pytest.mark.unit)
            tiers = {"unit"}
        if not tiers:
            problems.append(f"{item.nodeid}: no tier; add @pytest.mark.<tier> (or a module-level pytestmark) "
                            f"with one or more of {', '.join(TIERS)}")
        elif "unit" in tiers and len(tiers) > 1:
            problems.append(f"{item.nodeid}: `unit` excludes {', '.join(sorted(tiers - {'unit'}))}")
    if problems:
        raise pytest.UsageError("test tiers (see pytest.ini):\n" + "\n".join(problems))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("airflow"):  # dag.test() and the DAG's DeadlineAlert (tests/airflow_compat.py)
        from tests.airflow_compat import patch_dag_test_deadlines

        patch_dag_test_deadlines()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the session's SQLite metadata DB once (needed by dag.test())."""
    res = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return _AF_HOME


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    from tests.synthetic import write_tiny_fashion_mnist

    return write_tiny_fashion_mnist(tmp_path / "idx")


@pytest.fixture
def artifact_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "artifacts"
    root.mkdir()
    monkeypatch.setenv("TL_ARTIFACT_ROOT", str(root))
    return root


@pytest.fixture
def tiny_conf(tiny_data: Path) -> dict:
    from tests.synthetic import TINY_CONF

    return {**TINY_CONF, "data_dir": str(tiny_data)}


def load_dag(dag_id: str = "fashion_mnist_transfer_learning"):
    """The project's DAG, parsed from dags/ by a DagBag that must report no import errors."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()
