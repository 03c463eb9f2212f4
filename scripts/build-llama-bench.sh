#!/usr/bin/env bash
# Builds llama.cpp's llama-bench for comparisons (scripts/bench.sh reads LLAMA_BENCH), from the
# llama.cpp sources vendored in the PyPI source package llama-cpp-python, tuned for this CPU
# (GGML_NATIVE). Prints the binary's path. With TARGET=llama-server it builds and prints
# llama-server instead (scripts/concurrency.py compares against it); TARGET=llama-quantize builds
# the quantizer, and TARGET=llama only llama.cpp's static library, printing the source directory
# whose build/ holds it (scripts/quant-models.sh links its reference tool against it).
#
#   scripts/build-llama-bench.sh [VERSION]    (default 0.3.36)
#
# Needs cmake and a C++ compiler (apt-get install cmake g++). Cached under ~/.cache/trillim/.
set -euo pipefail
version="${1:-0.3.36}"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/trillim/llama-cpp-$version"
target="${TARGET:-llama-bench}"
bin="$dir/src/vendor/llama.cpp/build/bin/$target"
built="$bin"
if [ "$target" = llama ]; then
    bin="$dir/src/vendor/llama.cpp"
    built="$bin/build/src/libllama.a"
fi
if [ ! -e "$built" ]; then
    mkdir -p "$dir"
    if [ ! -d "$dir/src" ]; then
        # With the build backend present and no build isolation, pip takes the source
        # package as it is instead of first building the backend's own build tools.
        python3 -c 'import scikit_build_core' 2>/dev/null ||
            python3 -m pip install --quiet --disable-pip-version-check scikit-build-core >&2
        python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
            -d "$dir" "llama-cpp-python==$version" >&2
        mkdir -p "$dir/src"
        tar xzf "$dir/llama_cpp_python-$version.tar.gz" -C "$dir/src" --strip-components=1
    fi
    cd "$dir/src/vendor/llama.cpp"
    server=OFF
    [ "$target" = llama-server ] && server=ON
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER="$server" \
        -DBUILD_SHARED_LIBS=OFF >&2
    cmake --build build --target "$target" -j"$(nproc)" >&2
fi
echo "$bin"
