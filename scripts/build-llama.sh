#!/usr/bin/env bash
# Build llama.cpp's llama-bench and rpc-server (CPU only, with RPC) from the llama.cpp tree that PyPI's
# llama-cpp-python sdist vendors, into a cache outside the repository. llama.cpp is not packaged in Debian 12;
# PyPI is the one source this project may fetch from. Used to record tests/data/jobs/ and by the tests that
# run the real binaries. Idempotent: an existing build is reused.
#
#   scripts/build-llama.sh            # -> $LLAMA_CACHE/bin/{llama-bench,rpc-server}, $LLAMA_CACHE/tiny.gguf
#   LLAMA_CACHE=/tmp/llama scripts/build-llama.sh
#
# tiny.gguf is a 2-layer llama model with random weights (scripts/make_tiny_gguf.py, written with the gguf-py
# package vendored in the same sdist and numpy from PyPI, installed into $LLAMA_CACHE/py).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE=${LLAMA_CACHE:-/var/cache/picluster-test/llama}
JOBS=${JOBS:-2}
mkdir -p "$CACHE"
cd "$CACHE"
tiny_model() {
  [[ -d py/numpy ]] || python3 -m pip install -q --disable-pip-version-check --target py "numpy>=2.2.6"
  [[ -f tiny.gguf ]] || PYTHONPATH=py:src/gguf-py python3 "$HERE/make_tiny_gguf.py" tiny.gguf
}
if [[ -x bin/llama-bench && -x bin/rpc-server && -f bin/VERSION && $(cat bin/VERSION) == "$VERSION" ]]; then
  tiny_model
  echo "build-llama: cached in $CACHE/bin ($VERSION)"
  exit 0
fi
sdist=llama_cpp_python-$VERSION.tar.gz
if [[ ! -f $sdist ]]; then
  url=$(python3 - "$VERSION" <<'PY'
import json, sys, urllib.request
version = sys.argv[1]
with urllib.request.urlopen(f"https://pypi.org/pypi/llama-cpp-python/{version}/json", timeout=60) as r:
    data = json.load(r)
print(next(u["url"] for u in data["urls"] if u["packagetype"] == "sdist"))
PY
)
  curl -fsSL -o "$sdist.part" "$url"
  mv "$sdist.part" "$sdist"
fi
if [[ ! -f src/CMakeLists.txt ]]; then
  rm -rf src
  mkdir src
  tar xzf "$sdist" -C src --strip-components=3 "llama_cpp_python-$VERSION/vendor/llama.cpp"
fi
cmake -S src -B build -DCMAKE_BUILD_TYPE=Release -DGGML_RPC=ON -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >build.log
# The RPC server's target is rpc-server in older trees and ggml-rpc-server in newer ones (tools/rpc/CMakeLists.txt).
rpc=$(sed -n 's/^set(TARGET \(.*rpc-server\))$/\1/p' src/tools/rpc/CMakeLists.txt)
rpc=${rpc:-rpc-server}
nice -n 19 cmake --build build --target llama-bench "$rpc" -j "$JOBS" >>build.log
mkdir -p bin
cp build/bin/llama-bench bin/
cp "build/bin/$rpc" bin/rpc-server
echo "$VERSION" >bin/VERSION
tiny_model
echo "build-llama: built $CACHE/bin/llama-bench and rpc-server from llama-cpp-python $VERSION"
