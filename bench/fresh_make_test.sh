#!/usr/bin/env bash
# Time `make test` as a fresh machine runs it, then warm. A clean clone of COMMIT (no .venv), every test cache
# empty (PICLUSTER_TEST_CACHE: the HA venv, llama.cpp, the Debian roots' base and apt caches) and pip's own cache
# empty (PIP_CACHE_DIR), PATH as .ci/run sets it. The cold run is timed by phase: setup (the .venv), the test
# tools (`make -j2 test-tools`, as make test runs them: the HA venv and llama.cpp side by side, each one's own time
# from its .complete stamp), then `make test` itself (ruff, the tools now cached, pytest); the warm run is a second
# `make test` in the same clone. apt packages are whatever the machine has: installing them is timed only on a new
# machine.
#
#   bench/fresh_make_test.sh [COMMIT]     # default HEAD; ~35 min on 2 cores; prints a summary, keeps the logs
#   KEEP=1 bench/fresh_make_test.sh       # leave the scratch clone and caches (else removed at the end)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
COMMIT=$(git -C "$REPO" rev-parse "${1:-HEAD}")
WORK=$(mktemp -d /tmp/picluster-fresh.XXXXXX)
chmod 755 "$WORK"  # as a clone's usual place is: the tests run jobs as nobody from the clone's .venv
OUT=$REPO/bench/results/fresh_make_test-$(date -u +%Y%m%dT%H%M%SZ).txt
mkdir -p "$(dirname "$OUT")"
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH PICLUSTER_TEST_CACHE=$WORK/cache PIP_CACHE_DIR=$WORK/pip-cache
unset LLAMA_CACHE HA_PYTHON
export PYTEST_ADDOPTS="--durations=12"  # the slowest tests, in the logs
cleanup() { [[ -n ${KEEP:-} ]] || rm -rf "$WORK"; }
trap cleanup EXIT

note() { echo "$*" | tee -a "$OUT"; }
others() { pgrep -fc 'python.* -m pytest' || true; }
# phase NAME COMMAND...: run it in the clone, log to $WORK/NAME.log, note seconds and exit status.
phase() {
  local name=$1 started rc=0
  shift
  note "  $name: started $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg), other pytest processes: $(others)"
  started=$(date +%s)
  (cd "$WORK/clone" && "$@") >"$WORK/$name.log" 2>&1 || rc=$?
  note "  $name: $(($(date +%s) - started)) s, exit $rc ($(tail -n1 "$WORK/$name.log"))"
  return 0
}

note "fresh make test: commit $COMMIT, $(nproc) cores, $(uname -m), $(. /etc/os-release && echo "$PRETTY_NAME"), $(date -u +%F)"
git clone -q "$REPO" "$WORK/clone"
git -C "$WORK/clone" checkout -q "$COMMIT"
cold=$(date +%s)
note "cold (empty caches in $WORK):"
phase setup make setup
phase tools make --no-print-directory -j2 test-tools
note "    HA venv: $(cat "$WORK"/cache/ha-venv-*/.complete 2>/dev/null || echo not built)"
note "    llama.cpp: $(tail -n1 "$WORK/cache/llama/.complete" 2>/dev/null || echo not built)"
phase suite make test
note "cold total: $(($(date +%s) - cold)) s"
note "warm (same clone, caches filled):"
phase warm make test
grep -h -E '^[0-9]+ (passed|failed)|(passed|failed).* in [0-9.]+s' "$WORK/suite.log" "$WORK/warm.log" | tee -a "$OUT" || true
note "logs: $WORK (removed unless KEEP=1); summary: $OUT"
