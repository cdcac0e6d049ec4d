#!/usr/bin/env bash
# Build (once) the Home Assistant virtual environment the tests in tests/ha/ start a real Home Assistant from.
# It lives outside the repository, keyed by the HA version, so every clone and CI run on this machine reuses it:
#   /var/cache/picluster-test/ha-venv-<version>/   (override the parent with PICLUSTER_TEST_CACHE)
# A finished venv has a .complete stamp; a half-built one (no stamp) is removed and built again. Concurrent
# callers wait on a lock instead of building twice. Prints the venv's python on success; fails loudly otherwise.
set -euo pipefail
HA_VERSION=${1:-${HA_VERSION:-2025.4.4}}
# HA 2025.4 needs Python 3.13; pyenv's is the one on this machine, any python3.13 will do.
if [[ -z ${HA_PYTHON:-} ]]; then
  for candidate in /root/.pyenv/versions/3.13*/bin/python3 /usr/bin/python3.13 /usr/local/bin/python3.13; do
    [[ -x $candidate ]] && HA_PYTHON=$candidate && break
  done
fi
HA_PYTHON=${HA_PYTHON:-python3.13}
CACHE=${PICLUSTER_TEST_CACHE:-/var/cache/picluster-test}
VENV=$CACHE/ha-venv-$HA_VERSION

if ! "$HA_PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
  echo "ha-venv: no Python 3.13 found ($HA_PYTHON); install one (pyenv install 3.13) or set HA_PYTHON" >&2
  exit 1
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/ha-venv.lock"
flock 9
if [[ ! -f $VENV/.complete ]]; then
  rm -rf "$VENV"
  echo "ha-venv: building $VENV (homeassistant==$HA_VERSION; a few minutes, once)" >&2
  started=$(date +%s)
  "$HA_PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "homeassistant==$HA_VERSION" >&2
  "$VENV/bin/python" -c "import homeassistant.const as c; assert c.__version__ == '$HA_VERSION', c.__version__"
  # The requirements of the integrations the test's HA loads (their manifests: mqtt's paho-mqtt, frontend, ...),
  # installed now so HA runs with --skip-pip and never reaches for the network during a test.
  mapfile -t reqs < <("$VENV/bin/python" "$(dirname "$0")/ha_requirements.py")
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}" >&2
  echo "$HA_VERSION built in $(($(date +%s) - started)) s on $(date -u +%FT%TZ)" >"$VENV/.complete"
  echo "ha-venv: built in $(($(date +%s) - started)) s" >&2
fi
echo "$VENV/bin/python"
