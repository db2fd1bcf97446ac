import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "dags")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.synthetic import TINY_CONF, write_tiny_fashion_mnist  # noqa: E402


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_tiny_fashion_mnist(tmp_path / "idx")


@pytest.fixture
def artifact_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "artifacts"
    root.mkdir()
    monkeypatch.setenv("TL_ARTIFACT_ROOT", str(root))
    return root


@pytest.fixture
def tiny_conf(tiny_data: Path) -> dict:
    return {**TINY_CONF, "data_dir": str(tiny_data)}
