"""The pinned set installs on every supported platform and Python: resolved by pip, without installing.

Each (platform, Python) pair is one `pip install --dry-run --only-binary=:all: --platform ...
--python-version ... --target ...` of requirements-test.txt with constraints.txt (tests/install/
resolution.py says how markers are handled). It needs only the package registry. Three at a
time (pip mostly waits on the network and downloads the wheels even for a dry run).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.install.resolution import PYTHONS, TARGETS, ResolutionError, Target, check

# services: it needs the package registry (PyPI) through pip; registry says which service.
pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.registry]
MATRIX = [(t, py) for t in TARGETS for py in PYTHONS]


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, str], dict | ResolutionError]:
    def one(pair: tuple[Target, str]) -> dict | ResolutionError:
        try:
            return check(*pair)
        except ResolutionError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=3) as pool:
        return {(t.name, py): out for (t, py), out in zip(MATRIX, pool.map(one, MATRIX), strict=True)}


@pytest.mark.parametrize("target,python", MATRIX, ids=[f"{t.name.replace(' ', '-')}-py{py}" for t, py in MATRIX])
def test_pinned_set_resolves(outcomes, target: Target, python: str) -> None:
    out = outcomes[(target.name, python)]
    if isinstance(out, ResolutionError):
        pytest.fail(str(out), pytrace=False)
    tf = "tensorflow-cpu" if target.machine == "x86_64" and target.sys_platform == "linux" else "tensorflow"
    assert out[tf]["metadata"]["version"] == "2.21.0"
    assert out["apache-airflow"]["metadata"]["version"] == "3.3.2" and "pytest" in out
    wheel = out[tf]["download_info"]["url"].rsplit("/", 1)[-1]
    assert f"cp{python.replace('.', '')}" in wheel and target.machine in wheel, wheel


def test_a_missing_wheel_names_the_package_and_the_platform(tmp_path) -> None:
    # tensorflow-cpu has no macOS wheel: exactly the failure the markers in requirements.txt avoid.
    req = tmp_path / "requirements.txt"
    req.write_text("tensorflow-cpu==2.21.0\n")
    con = tmp_path / "constraints.txt"
    con.write_text("")
    macos = next(t for t in TARGETS if t.name == "macOS arm64")
    with pytest.raises(ResolutionError, match=r"no wheel of tensorflow-cpu==2\.21\.0 for macOS arm64, Python 3\.12"):
        check(macos, "3.12", requirements=req, constraints=con)
