#!/usr/bin/env bash
# Build llama.cpp's llama-bench and rpc-server (CPU only, with RPC) from the llama.cpp tree that PyPI's
# llama-cpp-python sdist vendors, into a cache outside the repository. llama.cpp is not packaged in Debian 12, so
# the sources come through pip, by package name (`pip download --no-binary llama-cpp-python` from the configured
# index): nothing here fetches a URL. Used to record tests/data/jobs/ and by the tests that run the real binaries.
#
#   scripts/build-llama.sh           # -> $LLAMA_CACHE/bin/{llama-bench,rpc-server}, $LLAMA_CACHE/tiny.gguf
#   scripts/build-llama.sh --check   # fetch, unpack, configure, compile one small library and make tiny.gguf:
#                                    # what the fresh-machine test runs in an empty cache, in about a minute
#   LLAMA_CACHE=/tmp/llama scripts/build-llama.sh
#
# The cache ($LLAMA_CACHE, default <test cache>/llama, see scripts/test-cache.sh) is keyed by the version and the
# build options: a finished build has a .complete stamp naming them, and any other stamp (or none: a half-built
# cache) means build again, reusing what is already there. Concurrent callers wait on a lock. Progress goes to
# stderr; the last line on stdout is the cache directory.
#
# tiny.gguf is a 2-layer llama model with random weights (scripts/make_tiny_gguf.py, written with the gguf-py
# package vendored in the same sdist and numpy, installed by pip into $LLAMA_CACHE/py-<python version>).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=test-cache.sh
source "$HERE/test-cache.sh"
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE=${LLAMA_CACHE:-$(picluster_test_cache)/llama}
JOBS=${JOBS:-$(nproc)}
PYTHON=${PYTHON:-python3}
CHECK=0
case ${1:-} in
  --check) CHECK=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2 && exit 2 ;;
esac
CMAKE_OPTIONS=(-DCMAKE_BUILD_TYPE=Release -DGGML_RPC=ON -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF)
KEY="llama-cpp-python $VERSION ${CMAKE_OPTIONS[*]}"
say() { echo "build-llama: $*" >&2; }

# What a fresh Debian 12 machine may lack. scripts/setup.sh installs these when run as root.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
"$PYTHON" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
  say "cannot build llama.cpp: missing ${missing[*]}; install them, then try again:"
  say "  sudo apt-get install -y ${missing[*]}   (scripts/setup.sh does this when run as root)"
  exit 1
fi

mkdir -p "$CACHE"
cd "$CACHE"
exec 9>.lock
flock 9
if ((!CHECK)) && [[ -f .complete && $(head -n1 .complete) == "$KEY" ]]; then
  say "cached in $CACHE ($(tail -n1 .complete))"
  echo "$CACHE"
  exit 0
fi
started=$(date +%s)
((CHECK)) || rm -f .complete

# 1. The sources: the sdist, through pip by name, into sdist/ (its own HTTP cache aside, pip keeps nothing).
sdist=sdist/llama_cpp_python-$VERSION.tar.gz
if [[ ! -f $sdist ]]; then
  say "fetching llama-cpp-python $VERSION (sdist, ~77 MB) with pip"
  rm -rf sdist.part
  # The sdist of this package only: `--no-binary :all:` would also build pip's metadata step's own helpers
  # (scikit-build-core and its build backends) from source, minutes more for the same file.
  if ! "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python -d sdist.part \
    "llama-cpp-python==$VERSION" >&2; then
    say "pip could not download llama-cpp-python==$VERSION: check that pip reaches its index" \
      "(pip config list; pip download llama-cpp-python==$VERSION)"
    exit 1
  fi
  mkdir -p sdist
  mv sdist.part/*.tar.gz "$sdist"
  rm -rf sdist.part
fi

# 2. Unpacked: only the vendored llama.cpp tree, stamped with its version.
if [[ ! -f src/.version || $(cat src/.version) != "$VERSION" ]]; then
  rm -rf src src.part build
  mkdir src.part
  tar -xzf "$sdist" -C src.part --strip-components=3 "llama_cpp_python-$VERSION/vendor/llama.cpp"
  echo "$VERSION" >src.part/.version
  mv src.part src
fi

# 3. Configured and built. The log stays in the cache; a failure shows its end.
build() {
  if ! "$@" >>build.log 2>&1; then
    say "failed: $* (end of $CACHE/build.log follows)"
    tail -n 30 build.log >&2
    exit 1
  fi
}
: >build.log
build cmake -S src -B build "${CMAKE_OPTIONS[@]}"
if ((CHECK)); then
  # The smallest library the binaries link (ggml's core): proves the compiler builds this tree.
  targets=(ggml-base)
else
  # The RPC server's target is rpc-server in older trees and ggml-rpc-server in newer ones (tools/rpc).
  rpc=$(sed -n 's/^set(TARGET \(.*rpc-server\))$/\1/p' src/tools/rpc/CMakeLists.txt)
  rpc=${rpc:-rpc-server}
  targets=(llama-bench "$rpc")
fi
say "compiling ${targets[*]} with $JOBS jobs (log: $CACHE/build.log)"
build nice -n 19 cmake --build build --target "${targets[@]}" -j "$JOBS"

# 4. The tiny model, with numpy from pip for the python that writes it.
py=py-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ ! -d $py/numpy ]]; then
  rm -rf "$py.part"
  "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$py.part" "numpy>=2.2.6" >&2
  mv "$py.part" "$py"
fi
if [[ ! -f tiny.gguf ]]; then
  PYTHONPATH=$py:src/gguf-py "$PYTHON" "$HERE/make_tiny_gguf.py" tiny.gguf.part
  mv tiny.gguf.part tiny.gguf
fi

if ((CHECK)); then
  say "check passed in $(($(date +%s) - started)) s: fetched, unpacked, configured, compiled ${targets[*]}"
else
  mkdir -p bin
  cp build/bin/llama-bench bin/
  cp "build/bin/$rpc" bin/rpc-server
  printf '%s\nbuilt in %s s on %s\n' "$KEY" "$(($(date +%s) - started))" "$(date -u +%FT%TZ)" >.complete
  say "built $CACHE/bin/llama-bench and rpc-server from llama-cpp-python $VERSION in $(($(date +%s) - started)) s"
fi
echo "$CACHE"
