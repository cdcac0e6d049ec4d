#!/usr/bin/env bash
# Build (once) the Home Assistant virtual environment the tests in tests/ha/ start a real Home Assistant from.
# It lives outside the repository, keyed by the HA version, so every clone and CI run on this machine reuses it:
#   <test cache>/ha-venv-<version>/   (the test cache: scripts/test-cache.sh; PICLUSTER_TEST_CACHE overrides it)
# A finished venv has a .complete stamp; a half-built one (no stamp) is removed and built again. Concurrent
# callers wait on a lock instead of building twice. Prints the venv's python on success; fails loudly otherwise.
#
#   scripts/ha-venv.sh [VERSION]         # build if needed; print the venv's python
#   scripts/ha-venv.sh --find-python     # only print the Python 3.13 it would build with (or say what to install)
#
# HA 2025.4 needs Python 3.13. It is looked for, in this order: $HA_PYTHON; python3.13 on PATH; pyenv's
# (`pyenv which python3.13`, then `pyenv prefix 3.13`), pyenv from PATH or $PYENV_ROOT (default ~/.pyenv).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test-cache.sh
source "$HERE/test-cache.sh"
FIND_ONLY=0
if [[ ${1:-} == --find-python ]]; then
  FIND_ONLY=1
  shift
fi
HA_VERSION=${1:-${HA_VERSION:-2025.4.4}}
say() { echo "ha-venv: $*" >&2; }

is_313() { [[ -n $1 ]] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; }

find_python() {
  local pyenv candidate prefix found
  if [[ -n ${HA_PYTHON:-} ]]; then
    # Asked for by name: never fall back to another interpreter behind the caller's back.
    if is_313 "$HA_PYTHON"; then
      command -v "$HA_PYTHON"
      return 0
    fi
    if command -v "$HA_PYTHON" >/dev/null; then found=$("$HA_PYTHON" -V 2>&1 | tail -n1); else found="not found"; fi
    say "HA_PYTHON=$HA_PYTHON is not a working Python 3.13 ($found): Home Assistant $HA_VERSION needs 3.13;" \
      "point HA_PYTHON at one, or unset it to search"
    return 1
  fi
  # On PATH; a pyenv shim for a version that is installed but not active fails to run and is passed over.
  candidate=$(command -v python3.13 || true)
  if is_313 "$candidate"; then
    echo "$candidate"
    return 0
  fi
  pyenv=$(command -v pyenv || true)
  [[ -z $pyenv && -x ${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv ]] && pyenv=${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv
  if [[ -n $pyenv ]]; then
    candidate=$("$pyenv" which python3.13 2>/dev/null || true)
    if is_313 "$candidate"; then
      echo "$candidate"
      return 0
    fi
    # Installed but not selected (pyenv global/local): the newest 3.13.x that pyenv has.
    prefix=$("$pyenv" prefix 3.13 2>/dev/null || true)
    if is_313 "$prefix/bin/python3.13"; then
      echo "$prefix/bin/python3.13"
      return 0
    fi
  fi
  say "Home Assistant $HA_VERSION needs Python 3.13 and none was found (HA_PYTHON unset, no working python3.13" \
    "on PATH, ${pyenv:+no 3.13 in }${pyenv:-no pyenv})."
  say "Debian 12 packages none: its python3 is 3.11 and its archive has no python3.13 (Debian 13's python3 is 3.13)."
  say "Install a CPython 3.13, then run the tests again; either of:"
  say "  pyenv install 3.13   pyenv (not a Debian package) builds it from python.org's sources; it needs"
  say "                       apt-get install build-essential libssl-dev zlib1g-dev libbz2-dev libreadline-dev"
  say "                       libsqlite3-dev libncurses-dev libffi-dev liblzma-dev tk-dev uuid-dev"
  say "  HA_PYTHON=/path/to/python3.13 make test   any CPython 3.13 with its venv and ensurepip modules"
  return 1
}

HA_PYTHON=$(find_python)
if ((FIND_ONLY)); then
  echo "$HA_PYTHON"
  exit 0
fi
CACHE=$(picluster_test_cache)
VENV=$CACHE/ha-venv-$HA_VERSION
mkdir -p "$CACHE"
exec 9>"$CACHE/ha-venv.lock"
flock 9
if [[ ! -f $VENV/.complete ]]; then
  rm -rf "$VENV"
  say "building $VENV (homeassistant==$HA_VERSION with $HA_PYTHON; a few minutes, once)"
  started=$(date +%s)
  pip=(-m pip install -q --disable-pip-version-check --root-user-action=ignore)
  "$HA_PYTHON" -m venv "$VENV"
  "$VENV/bin/python" "${pip[@]}" --upgrade pip >&2
  "$VENV/bin/python" "${pip[@]}" "homeassistant==$HA_VERSION" >&2
  "$VENV/bin/python" -c "import homeassistant.const as c; assert c.__version__ == '$HA_VERSION', c.__version__"
  # The requirements of the integrations the test's HA loads (their manifests: mqtt's paho-mqtt, frontend, ...),
  # installed now so HA runs with --skip-pip and never reaches for the network during a test.
  mapfile -t reqs < <("$VENV/bin/python" "$HERE/ha_requirements.py")
  "$VENV/bin/python" "${pip[@]}" "${reqs[@]}" >&2
  echo "$HA_VERSION built in $(($(date +%s) - started)) s on $(date -u +%FT%TZ) with $("$HA_PYTHON" -V)" \
    >"$VENV/.complete"
  say "built in $(($(date +%s) - started)) s"
fi
echo "$VENV/bin/python"
