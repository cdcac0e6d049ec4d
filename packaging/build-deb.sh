#!/usr/bin/env bash
# Build picluster's .deb files into build/debs/ (`make deb`).
#
#   packaging/build-deb.sh [--version VERSION] [--out DIR] [--no-lintian]
#
# Copies the tree (without build outputs and virtual environments) to a temporary directory, puts
# packaging/debian/ at its top, runs `dpkg-buildpackage -us -uc -b` there with a plain system PATH (a pyenv or
# venv python first on PATH breaks dh-python), and moves the .deb, .changes and .buildinfo files to DIR.
# --version builds another version from the same tree (the upgrade test uses it); it must start with the
# version in nodeagent/protocol/version.py. Then lintian checks the result: any error or warning fails the build.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/build/debs
version=""
lintian=1
while (($#)); do
  case $1 in
    --version) version=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-lintian) lintian=0; shift ;;
    *) echo "usage: $0 [--version VERSION] [--out DIR] [--no-lintian]" >&2; exit 2 ;;
  esac
done
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

need=(dpkg-dev debhelper dh-python python3-all python3-setuptools pybuild-plugin-pyproject)
((lintian)) && need+=(lintian)
missing=()
for pkg in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "build-deb: missing build dependencies; run this, then try again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "build-deb: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

upstream=$(sed -n 's/^__version__ = "\([^"]*\)".*$/\1/p' "$repo/nodeagent/protocol/version.py")
packaged=$(dpkg-parsechangelog -l "$repo/packaging/debian/changelog" -S Version)
if [[ $packaged != "$upstream" ]]; then
  echo "build-deb: packaging/debian/changelog says $packaged but nodeagent/protocol/version.py says $upstream;" \
    "add a changelog entry for $upstream" >&2
  exit 1
fi
if [[ -n $version && $version != "$upstream"* ]]; then
  echo "build-deb: --version $version must start with $upstream (nodeagent/protocol/version.py)" >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src=$tmp/picluster
mkdir "$src"
tar -C "$repo" -cf - --exclude=./.git --exclude=./.venv --exclude=./.cache --exclude=./build \
  --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
  --exclude=.ruff_cache --exclude=./bench/results --exclude=./debian . | tar -C "$src" -xf -
cp -a "$src/packaging/debian" "$src/debian"
if [[ -n $version ]]; then
  entry="picluster ($version) unstable; urgency=medium

  * Rebuilt as $version by packaging/build-deb.sh --version.

 -- $(dpkg-parsechangelog -l "$src/debian/changelog" -S Maintainer)  $(date -R)
"
  printf '%s\n' "$entry" | cat - "$src/debian/changelog" >"$tmp/changelog"
  mv "$tmp/changelog" "$src/debian/changelog"
fi

echo "build-deb: building in $src"
(cd "$src" && env -i PATH="$PATH" HOME="$tmp" LC_ALL=C.UTF-8 dpkg-buildpackage -us -uc -b) >"$tmp/build.log" 2>&1 || {
  tail -40 "$tmp/build.log" >&2
  echo "build-deb: dpkg-buildpackage failed (last 40 lines above)" >&2
  exit 1
}
mkdir -p "$out"
rm -f "$out"/picluster*.deb "$out"/python3-picluster*.deb "$out"/picluster_*.changes "$out"/picluster_*.buildinfo
mv "$tmp"/*.deb "$tmp"/*.changes "$tmp"/*.buildinfo "$out"/
ls -1 "$out"
if ((lintian)); then
  changes=$(ls "$out"/picluster_*.changes)
  lintian --fail-on error,warning --display-info "$changes"
  echo "build-deb: lintian: no errors, no warnings"
fi
