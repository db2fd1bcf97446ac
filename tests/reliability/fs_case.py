"""Run split_data against an artifact root on a read-only or a full tmpfs, inside a private mount namespace.

Started by test_bad_input.py as `unshare --mount ... python fs_case.py MODE MOUNTPOINT CONF_JSON`: the
mount exists only in this process's namespace, so it vanishes with the process even if it is killed,
and root's usual power to write anywhere is beaten by the file system itself (EROFS / ENOSPC), not by
file modes that root ignores. Prints one line: RESULT {json}.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]


def mount_tmpfs(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)


def fill(folder: Path) -> int:
    """Write until the file system says ENOSPC; return the bytes written."""
    written = 0
    with open(folder / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
                written += 65536
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC
    return written


def main(mode: str, mountpoint: str, conf_json: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from include.artifacts import RunPaths
    from include.config import ExperimentConfig
    from tasks import split_data
    from tasks.common import PERMANENT_ERRORS, fail_fast

    root = Path(mountpoint)
    if mode == "readonly":
        mount_tmpfs(root, "ro,size=4m")
    elif mode == "full":
        mount_tmpfs(root, "size=512k")
        (root / "models").mkdir()
        (root / "reports").mkdir()
        fill(root)
    else:
        raise SystemExit(f"unknown mode {mode}")
    cfg = ExperimentConfig.from_params(json.loads(conf_json))
    out = {"mode": mode}
    try:
        fail_fast(split_data.run)(cfg, RunPaths.for_run("env-case", root=root))
        out["error_type"] = None
    except AirflowFailException as exc:
        out.update(error_type="AirflowFailException", cause_type=type(exc.__cause__).__name__,
                   permanent=isinstance(exc.__cause__, PERMANENT_ERRORS), message=str(exc))
    except Exception as exc:  # reported to the test, which fails on it
        out.update(error_type=type(exc).__name__, message=str(exc))
    out["models_reports_files"] = sorted(str(p.relative_to(root)) for sub in ("models", "reports")
                                         for p in (root / sub).rglob("*") if p.is_file())
    out["temp_files"] = sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp*"))
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
