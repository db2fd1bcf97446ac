#!/usr/bin/env bash
# Fills the folder docker-compose.yaml mounts by default (./data/fashion-mnist) with the four
# Fashion-MNIST IDX files, copied from the Debian package's folder or the Keras cache. Run as root on
# Debian/Ubuntu, it installs the package first when neither has the files.
set -euo pipefail
dest=${1:-data/fashion-mnist}
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
has_all() { for f in "${files[@]}"; do [ -s "$1/$f" ] || return 1; done; }

if has_all "$dest"; then echo "Fashion-MNIST already in $dest"; exit 0; fi
sources=("${TL_DATA_DIR:-}" /usr/share/datasets/fashion-mnist "$HOME/.keras/datasets/fashion-mnist")
found() { for s in "${sources[@]}"; do [ -n "$s" ] && has_all "$s" && return 0; done; return 1; }
if ! found && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing the Debian package dataset-fashion-mnist ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || true
fi
for src in "${sources[@]}"; do
  if [ -n "$src" ] && has_all "$src"; then
    mkdir -p "$dest"
    for f in "${files[@]}"; do cp "$src/$f" "$dest/.$f.tmp" && mv "$dest/.$f.tmp" "$dest/$f"; done
    # World-readable: the containers read them as AIRFLOW_UID, which need not own them.
    chmod 755 "$dest" && chmod 644 "${files[@]/#/$dest/}"
    echo "Fashion-MNIST copied from $src to $dest"
    exit 0
  fi
done
echo "Fashion-MNIST not found: install it (sudo apt-get install dataset-fashion-mnist), or put the four" \
     "*-ubyte.gz files in $dest, or set TL_DATASET_DIR in .env to a folder that has them." >&2
exit 1
