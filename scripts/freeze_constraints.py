"""Write constraints.txt from the working install (`make constraints`), keeping platform markers.

pip freeze pins what this machine installed, e.g. tensorflow-cpu on Linux x86_64. A requirement
that requirements.txt selects by an environment marker is written as requirements.txt states it,
so the file stays right for the platforms this machine is not (tests/install checks them all).
Pins of packages this machine did not install are kept: other platforms or Python patch levels need
them (e.g. async-timeout below Python 3.11.3).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def marked_requirements(path: Path) -> list[Requirement]:
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith(("#", "-")):
            req = Requirement(line)
            if req.marker is not None:
                reqs.append(req)
    return reqs


def main() -> None:
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude", "pip", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    marked = marked_requirements(ROOT / "requirements.txt")
    names = {canonicalize_name(r.name) for r in marked}
    lines = [line for line in frozen if canonicalize_name(line.split("==")[0]) not in names] + [str(r) for r in marked]
    have = {canonicalize_name(Requirement(line).name) for line in lines}
    old = ROOT / "constraints.txt"
    if old.exists():
        lines += [line for line in old.read_text().splitlines()
                  if line.strip() and canonicalize_name(Requirement(line).name) not in have]
    lines.sort(key=lambda line: canonicalize_name(Requirement(line).name))
    tmp = ROOT / "constraints.txt.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(ROOT / "constraints.txt")


if __name__ == "__main__":
    main()
