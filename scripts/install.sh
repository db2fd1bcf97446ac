#!/usr/bin/env bash
# Create the virtual environment (if it is missing or broken) and install one requirements file.
# Usage: scripts/install.sh PYTHON VENV REQUIREMENTS   (the Makefile's install targets)
# The Makefile touches its marker only after this succeeds, so a failed install is redone next time.
set -euo pipefail
python=$1 venv=$2 reqs=$3
SUPPORTED="3.11 3.12 3.13"  # Airflow 3.3 and TensorFlow 2.21 both, and the pins resolve (tests/install)

fail() { echo "make: $*" >&2; exit 1; }
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
supported() { case " $SUPPORTED " in *" $1 "*) return 0 ;; esac; return 1; }

# Keep an existing environment only if its interpreter runs a supported version and has pip.
if [ -e "$venv/bin/python" ]; then
  have=$(version_of "$venv/bin/python" || true)
  if ! supported "$have" || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "Recreating $venv: its Python (${have:-not runnable}) is unsupported or has no pip"
    rm -rf "$venv"
  fi
fi

if [ ! -e "$venv/bin/python" ]; then
  [ -n "$python" ] || fail "no supported Python found: install Python 3.11, 3.12 or 3.13 (Debian/Ubuntu: apt-get install python3.11 python3.11-venv; macOS: brew install python@3.12) or pass PYTHON=/path/to/python3.x"
  have=$(version_of "$python") || fail "PYTHON=$python does not run"
  supported "$have" || fail "PYTHON=$python is Python $have; supported are $SUPPORTED"
  "$python" -m venv "$venv" || { rm -rf "$venv"; fail "could not create $venv with $python (Debian/Ubuntu: apt-get install python$have-venv)"; }
fi

"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$reqs" -c constraints.txt \
  || fail "pip could not install $reqs (see above); nothing is marked installed, so the next make retries"
