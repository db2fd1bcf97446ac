#!/usr/bin/env bash
# `make test-arm64`: `make install-test`, `make test-fast` and one tiny dag.test() run in a Linux aarch64
# root (Debian, from debootstrap) under qemu-user emulation, from this checkout's files (docs/platforms.md).
# Usage: scripts/test_arm64.sh [--until=root|install] [X86_64_PYTHON]
#   --until=root: build (or check) the cached root and stop; --until=install: also `make install-test`
#   (e.g. to prepare ahead of a run: the next run finds both done).
#   X86_64_PYTHON: a venv's python whose `pip freeze` the aarch64 packages are compared with
#   (default: constraints.txt, the set resolved on Linux x86_64).
# The root is cached in $TL_ARM64_CACHE (default ~/.cache/tl-arm64): debootstrap fills a temporary folder
# that is renamed into place only when complete; a root without python3 is rebuilt. Its venv
# (/opt/tl-venv inside the root: aarch64 wheels) is kept with it; the host's .venv is never used there.
# Every mount and process of a run lives in its own mount and PID namespaces (unshare): when a run
# ends, by Ctrl-C included, the kernel removes them, so nothing stays mounted or running on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
until=""
case "${1:-}" in --until=root | --until=install) until=${1#--until=}; shift ;; --until=*) echo "test-arm64: --until takes root or install" >&2; exit 2 ;; esac
ref_python=${1:-}
cache=${TL_ARM64_CACHE:-$HOME/.cache/tl-arm64}
suite=${TL_ARM64_SUITE:-bookworm}
mirror=${TL_ARM64_MIRROR:-http://deb.debian.org/debian}
binfmt=${TL_ARM64_BINFMT_DIR:-/proc/sys/fs/binfmt_misc}
root=$cache/$suite-arm64
venv=/opt/tl-venv  # the checkout's .venv links here: VENV=... on make's command line would reach the tests' makes
# make and python3-venv for `make install-test`; git because the Makefile's callers may use it.
packages=ca-certificates,make,python3,python3-venv,python3-pip,git
e2e_test=tests/e2e/test_dag_run.py::test_tiny_run_every_task_succeeds_and_metrics_are_complete
cmdline_tests=(tests/deploy/test_processes.py::test_a_process_ignoring_sigterm_is_killed_and_reported
               tests/deploy/test_processes.py::test_after_the_leader_was_reaped_only_its_session_is_stopped)

say() { echo "test-arm64: $*"; }
die() { echo "test-arm64: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing $1: install $2"; }
clock() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }

# --- what this machine must have: each missing piece is one line saying what to install ---------------
[ "$(uname -s)" = Linux ] || die "needs a Linux host (chroot, binfmt_misc); on macOS, run it in a Linux VM"
need debootstrap "debootstrap (Debian/Ubuntu: apt-get install debootstrap)"
need unshare "util-linux (Debian/Ubuntu: apt-get install util-linux)"
need git "git (Debian/Ubuntu: apt-get install git)"
emulated=true
[ "$(uname -m)" = aarch64 ] && emulated=false  # an aarch64 host runs the root natively
entry=$binfmt/qemu-aarch64
registered() { [ -e "$entry" ] && grep -qx enabled "$entry"; }
if $emulated; then
  if ! registered; then
    need qemu-aarch64-static "qemu-user-static, the aarch64 emulator (Debian/Ubuntu: apt-get install qemu-user-static binfmt-support)"
    need update-binfmts "binfmt-support, which registers qemu with the kernel (Debian/Ubuntu: apt-get install binfmt-support)"
  fi
  if [ ! -e "$binfmt/status" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" >/dev/null 2>&1 \
      || die "binfmt_misc is not mounted at $binfmt and mounting it was refused (as root on a host: mount -t binfmt_misc binfmt_misc $binfmt; in a container: run it privileged)"
  fi
  if ! registered; then
    { update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 && registered; } \
      || die "registering qemu-aarch64 in $binfmt was refused (as root on a host: update-binfmts --enable qemu-aarch64; in a container: run it privileged)"
  fi
  # F (fix-binary): the kernel keeps the emulator open, so it runs inside a root that lacks it.
  grep -q '^flags:.*F' "$entry" \
    || die "the kernel's qemu-aarch64 entry lacks the F flag, so it cannot run inside a chroot: apt-get install qemu-user-static (its entry has it), then update-binfmts --enable qemu-aarch64"
fi
[ "$(id -u)" = 0 ] || die "needs root for debootstrap, chroot and mounts: sudo make test-arm64"

# --- one run at a time per cache; an interrupted run leaves nothing behind -----------------------------
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -n 9 || die "another make test-arm64 is using $cache"
rm -rf --one-file-system "$cache"/building.* "$cache"/damaged.*  # left by a run killed with -9
log=$cache/last-run.log
exec 3>&1 4>&2
# The whole run also goes to $log; tee ignores Ctrl-C, so the trap's last line still gets through.
exec > >(trap '' INT TERM; exec tee "$log") 2>&1
tee_pid=$!
building="" child=""

# Whether any process has its root or working folder under $1.
processes_in() {
  local p link
  for p in /proc/[0-9]*; do
    for link in root cwd; do
      link=$(readlink "$p/$link" 2>/dev/null) || continue
      case "$link" in "$1" | "$1"/*) return 0 ;; esac
    done
  done
  return 1
}
cleanup() {
  # Killing unshare kills its child (--kill-child), the namespace's init; the kernel then kills every
  # process in that PID namespace, and the mount namespace, with all its mounts, goes with the last one.
  if [ -n "$child" ]; then kill -KILL "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi
  local i
  for i in $(seq 50); do processes_in "$cache" || break; sleep 0.2; done
  if [ -n "$building" ]; then rm -rf --one-file-system "$building"; fi
}
trap cleanup EXIT
interrupted() {
  trap - EXIT
  cleanup
  # To the terminal's stderr (fd 4): a step's own redirection (debootstrap's log) may still be in effect.
  local msg="test-arm64: interrupted; no mount, process or half-built root is left in $cache"
  echo "$msg" >>"$log"
  echo "$msg" >&4
  exit 130
}
trap interrupted INT TERM

# Run "$@" in the background in new mount and PID namespaces, and wait for it: a trapped signal ends
# the wait at once (a script's background job ignores SIGINT itself; the trap kills it).
in_namespaces() {
  unshare --mount --propagation private --pid --fork --kill-child -- "$@" &
  child=$!
  local rc=0
  wait "$child" || rc=$?
  child=""
  return "$rc"
}

# in_root_at DIR COMMAND...: run it in that root, with its own /proc, /dev/shm and /tmp, and a clean env.
in_root_at() {
  # shellcheck disable=SC2016  # expanded inside the namespace
  # The root is bind-mounted on itself first: inside, / is then a mount point, as tests that call
  # `unshare --propagation private` themselves need.
  in_namespaces bash -c 'set -e; r=$1; shift
    mount --bind "$r" "$r"; mount -t proc proc "$r/proc"; mount --rbind /dev "$r/dev"; mount --rbind /sys "$r/sys"
    mount -t tmpfs tmpfs "$r/dev/shm"; mount -t tmpfs -o size=8g tmpfs "$r/tmp"
    exec chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb PIP_DISABLE_PIP_VERSION_CHECK=1 \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' bash "$@"
}
in_root() { in_root_at "$root" "$@"; }

# Why the cached root cannot be used (nothing when it can, or when there is none).
root_damage() {
  if [ ! -e "$root" ]; then return 0; fi
  if [ ! -f "$root/.tl-arm64-complete" ]; then echo "it was never completed"; return 0; fi
  if [ ! -x "$root/usr/bin/python3" ]; then echo "it has no python3"; return 0; fi
}
discard_root() {
  local old
  old=$(mktemp -d "$cache/damaged.XXXXXX")
  mv "$root" "$old/" && rm -rf --one-file-system "$old"
}

build_root() {
  building=$(mktemp -d "$cache/building.XXXXXX")
  local new=$building/root
  say "debootstrap $suite arm64 into $cache (first run on this machine only; minutes; log: $cache/debootstrap.log)"
  if ! in_namespaces debootstrap --arch arm64 --variant=minbase --include="$packages" "$suite" "$new" "$mirror" \
      >"$cache/debootstrap.log" 2>&1; then
    tail -5 "$cache/debootstrap.log"
    die "debootstrap $suite arm64 from $mirror failed (log: $cache/debootstrap.log); nothing was cached"
  fi
  # Networks that intercept TLS add their CA to the host's store: pip inside the root needs it too.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$new/usr/local/share/ca-certificates/"
    in_root_at "$new" update-ca-certificates >/dev/null || die "update-ca-certificates failed in the new root"
  fi
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$new/etc/pip.conf"
  rm -rf "$new"/var/cache/apt/archives/*.deb "$new"/var/lib/apt/lists/*
  touch "$new/.tl-arm64-complete"
  mv "$new" "$root" || die "could not move the new root into $root"  # a rename: all of it or nothing
  rm -rf "$building"
  building=""
}

prepare_root() {
  local why
  why=$(root_damage)
  if [ -n "$why" ]; then
    say "the cached root $root is damaged ($why): rebuilding it"
    discard_root
  fi
  if [ -e "$root" ]; then say "cached root: $root"; else build_root; fi
  local machine
  machine=$(in_root uname -m 2>&1) || true
  [ "$machine" = aarch64 ] \
    || die "the aarch64 root does not run here (uname -m said: ${machine:-nothing}); see update-binfmts --display qemu-aarch64"
  if ! in_root python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    say "the cached root $root is damaged (its python3 does not run with venv): rebuilding it"
    discard_root
    build_root
  fi
}

copy_repo() {  # this checkout's files, tracked and untracked but not ignored: no .venv, .airflow, data
  rm -rf --one-file-system "$root/work/repo" && mkdir -p "$root/work/repo" || die "could not empty $root/work/repo"
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true  # pip's DNS: the host's, as it is today
  ln -s "$venv" "$root/work/repo/.venv"
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
    | tar --null -T - -cf - | tar -C "$root/work/repo" -xf - || die "could not copy this checkout into the root"
  git -C "$root/work/repo" init -q || die "git init failed in the copy"  # tests ask git what is ignored
}

# The cached venv the copy's .venv links to: created here when missing or broken (an interrupted first
# install), since make's own `python -m venv .venv` cannot create a venv through a dangling link.
ensure_venv() {
  in_root "$venv/bin/python" -m pip --version >/dev/null 2>&1 && return 0
  rm -rf --one-file-system "$root$venv"
  in_root python3 -m venv "$venv" || die "could not create $venv in the root (python3 -m venv)"
}

# step NAME COMMAND...: run it (in this shell, so that Ctrl-C reaches the trap), print and keep its time.
steps=()
step() {
  local name=$1 t0=$SECONDS rc=0
  shift
  say "== $name"
  "$@" || rc=$?
  local took
  took="$(clock $((SECONDS - t0)))$([ "$rc" = 0 ] || echo ", failed (exit $rc)")"
  steps+=("$name: $took")
  say "$name: $took"
  return "$rc"
}

say "$(date -u +%FT%TZ) on $(hostname), $(uname -m), $(nproc) cores; cache $cache"
t_start=$SECONDS
ok=true
step "root ($suite arm64)" prepare_root
if [ "$until" = root ]; then say "root ready: $root"; exit 0; fi
step "copy the checkout into the root" copy_repo
step "venv $venv in the root" ensure_venv
step "make install-test" in_root make -C /work/repo --no-print-directory install-test || ok=false
if [ "$until" = install ]; then $ok || die "make install-test failed in the root"; say "installed: $root$venv"; exit 0; fi
if $ok; then
  fast_args=-q
  if $emulated; then
    # qemu-user shows itself in /proc/PID/cmdline (interpreter, path, then argv): these two read it.
    say "deselected under emulation (they read /proc/PID/cmdline, where qemu-user adds its interpreter): ${cmdline_tests[*]}"
    for t in "${cmdline_tests[@]}"; do fast_args+=" --deselect $t"; done
  fi
  step "make test-fast" in_root make -C /work/repo --no-print-directory test-fast PYTEST_ARGS="$fast_args" || ok=false
  step "dag.test() on tiny synthetic data" in_root bash -c "cd /work/repo && TF_CPP_MIN_LOG_LEVEL=2 $venv/bin/python -m pytest -q $e2e_test" || ok=false
fi

# --- what the run showed ----------------------------------------------------------------------------------
# name version, names normalised (PEP 503), markers dropped; sorted for join.
norm() {
  awk '{ line = $0; sub(/[ \t]*;.*/, "", line); i = index(line, "=="); if (!i) next
         n = tolower(substr(line, 1, i - 1)); gsub(/[-_.]+/, "-", n); gsub(/ /, "", n); print n, substr(line, i + 2) }' \
    | LC_ALL=C sort
}
machine=$(in_root uname -m)
pyver=$(in_root python3 -c 'import platform; print(platform.python_version(), "with", *platform.libc_ver())')
emulator=""
if $emulated; then emulator=", emulated by $(qemu-aarch64-static --version | head -1) on $(uname -m), $(nproc) cores"; fi
diff_lines="" extra=""
if [ -x "$root$venv/bin/python" ]; then
  aarch=$(in_root $venv/bin/python -m pip freeze | norm)
  if [ -n "$ref_python" ] && ref=$("$ref_python" -m pip freeze 2>/dev/null); then
    refname="$ref_python -m pip freeze"
  else
    ref=$(cat constraints.txt) refname="constraints.txt"
  fi
  ref=$(printf '%s\n' "$ref" | norm)
  # Left out: what the x86_64 venv has beyond the project's pins (installed there by hand).
  keep=$( { norm <constraints.txt; printf '%s\n' "$aarch"; } | cut -d' ' -f1 | LC_ALL=C sort -u)
  extra=$(LC_ALL=C join -v1 <(printf '%s\n' "$ref") <(printf '%s\n' "$keep") | cut -d' ' -f1 | tr '\n' ' ')
  ref=$(LC_ALL=C join <(printf '%s\n' "$ref") <(printf '%s\n' "$keep"))
  diff_lines=$(LC_ALL=C join -a1 -a2 -e '(none)' -o 0,1.2,2.2 <(printf '%s\n' "$ref") <(printf '%s\n' "$aarch") \
    | awk '$2 != $3 { printf "    %s %s -> %s\n", $1, $2, $3; n++ } END { if (!n) print "    none" }')
fi
exec >&3 2>&4 3>&- 4>&-
wait "$tee_pid" 2>/dev/null || true  # the log is complete before it is read
{
  echo
  say "summary"
  echo "  machine: $machine (Debian $suite root$emulator)"
  echo "  python: $pyver"
  if [ -n "$diff_lines" ]; then
    echo "  installed packages that differ from x86_64 (x86_64 = $refname -> aarch64 = $venv):"
    echo "$diff_lines"
    if [ -n "${extra// /}" ]; then echo "    (left out: in the x86_64 venv, pinned nowhere, so installed there by hand: $extra)"; fi
  fi
  echo "  pytest:"
  grep -E '^(=+ )?[0-9]+ (passed|failed|errors?)\b.* in [0-9.]+s' "$log" | sed 's/^/    /' || echo "    no pytest summary (see above)"
  echo "  steps:"
  printf '    %s\n' "${steps[@]}" "total: $(clock $((SECONDS - t_start)))"
} | tee -a "$log"
$ok || die "failed (output above; log: $log)"
say "passed (log: $log)"
