#!/usr/bin/env bash
# Base image for `make e2e-compose`'s stand-in images: Debian bookworm from debootstrap, imported into
# Podman as localhost/tl-e2e/debian:bookworm. The root file system is cached as a tarball in
# $TL_E2E_CACHE (default ~/.cache/tl-e2e-compose) and reused by later runs on the same machine.
set -euo pipefail
image=${1:-localhost/tl-e2e/debian:bookworm}
cache=${TL_E2E_CACHE:-$HOME/.cache/tl-e2e-compose}
mirror=${TL_E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball=$cache/bookworm-rootfs.tar
# python3 for the Airflow stand-in, curl for health checks, dumb-init for /entrypoint, procps for ps.
packages=ca-certificates,curl,python3,python3-venv,dumb-init,procps

if podman image exists "$image"; then echo "base image $image: present"; exit 0; fi
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  echo "base image: debootstrap bookworm into $cache (first run on this machine only)"
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" > "$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; echo "debootstrap failed (log: $cache/debootstrap.log)" >&2; exit 1; }
  # Networks that intercept TLS add their CA to the host's store: containers built here need it too
  # (apt, pip and Keras downloads inside the builds and tasks).
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  # pip uses its own certifi bundle unless told otherwise; Debian's store has the CAs added above.
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
fi
echo "base image: podman import $tarball -> $image"
podman import --quiet "$tarball" "$image" >/dev/null
