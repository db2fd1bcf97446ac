#!/usr/bin/env bash
# What the project needs outside Python, for `make data`, `make test` and so .ci/run:
#   data     the real Fashion-MNIST IDX files (Debian package dataset-fashion-mnist);
#   browser  headless Chrome/Chromium for the report-rendering and UI tests (Debian package chromium).
# As root with apt-get they are installed; elsewhere this says how to provide them. A missing dataset
# is not fatal (the pipeline can download it); a missing browser is, under CI=true only.
# Usage: PY=.venv/bin/python scripts/system_packages.sh data [browser]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"

has_data() { for f in $files; do [ -s "$1/$f" ] || return 1; done; }
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {  # the package lists may be stale or absent on a fresh machine: update once on failure
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

ensure_data() {
  for d in "${TL_DATA_DIR:-}" /usr/share/datasets/fashion-mnist "$HOME/.keras/datasets/fashion-mnist"; do
    if [ -n "$d" ] && has_data "$d"; then echo "Fashion-MNIST found in $d"; return 0; fi
  done
  if can_apt; then
    echo "Installing the Debian package dataset-fashion-mnist ..."
    apt_install dataset-fashion-mnist || true
    has_data /usr/share/datasets/fashion-mnist && { echo "Fashion-MNIST installed in /usr/share/datasets/fashion-mnist"; return 0; }
  fi
  cat >&2 <<MSG
Fashion-MNIST IDX files not found. Provide them in one of these ways:
  1. put the four *-ubyte.gz files in a folder and set TL_DATA_DIR=/that/folder (or the data_dir param);
  2. on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (-> /usr/share/datasets/fashion-mnist);
  3. let Keras download them once: .venv/bin/python -c 'import keras; keras.datasets.fashion_mnist.load_data()'
     (-> ~/.keras/datasets/fashion-mnist; needs access to storage.googleapis.com).
The pipeline itself also tries option 3 when the machine is online.
MSG
}

ensure_browser() {
  local found
  if found=$("$PY" -m tests.browser --which); then echo "Browser for the UI tests: $found"; return 0; fi
  if can_apt; then
    echo "Installing the Debian package chromium (headless browser for the UI tests) ..."
    apt_install chromium || true
    if found=$("$PY" -m tests.browser --which); then echo "Browser for the UI tests: $found"; return 0; fi
  fi
  found=${found:-no Chrome or Chromium found ($PY -m tests.browser --which did not run)}
  if [ "${CI:-}" = true ]; then echo "CI: $found" >&2; return 1; fi
  echo "Browser tests will be skipped: $found" >&2
}

for what in "$@"; do
  case "$what" in
    data) ensure_data ;;
    browser) ensure_browser ;;
    *) echo "system_packages.sh: unknown item '$what' (data, browser)" >&2; exit 2 ;;
  esac
done
