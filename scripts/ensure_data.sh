#!/usr/bin/env bash
# Makes sure the real Fashion-MNIST IDX files are available, or says how to provide them.
set -euo pipefail
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
has_all() { for f in "${files[@]}"; do [ -s "$1/$f" ] || return 1; done; }

for d in "${TL_DATA_DIR:-}" /usr/share/datasets/fashion-mnist "$HOME/.keras/datasets/fashion-mnist"; do
  if [ -n "$d" ] && has_all "$d"; then echo "Fashion-MNIST found in $d"; exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing the Debian package dataset-fashion-mnist ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || true
  has_all /usr/share/datasets/fashion-mnist && { echo "Fashion-MNIST installed in /usr/share/datasets/fashion-mnist"; exit 0; }
fi
cat >&2 <<MSG
Fashion-MNIST IDX files not found. Provide them in one of these ways:
  1. put the four *-ubyte.gz files in a folder and set TL_DATA_DIR=/that/folder (or the data_dir param);
  2. on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (-> /usr/share/datasets/fashion-mnist);
  3. let Keras download them once: python -c 'import keras; keras.datasets.fashion_mnist.load_data()'
     (-> ~/.keras/datasets/fashion-mnist).
The pipeline itself also tries option 3 when the machine is online.
MSG
exit 0
