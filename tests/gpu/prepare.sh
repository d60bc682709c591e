#!/usr/bin/env bash
# Prepares the GPU speech benchmark (README.md beside this file) on a machine without a
# GPU or Rust on the GPU side: everything the two device calls carry, under .gpu/.
#
#   .gpu/a: whisper.cpp's sources (whisper-rs-sys's vendored copy, CPU and CUDA backends
#           only), the first 55 MB of the q8_0 model, build.sh
#   .gpu/b: asr-bench linked to shared whisper.cpp libraries, the rest of the model, run.sh
#
# Why this shape: the device machine has CUDA, cmake and a C++ compiler but no Rust and no
# registries, and a call carries at most 64 MiB. So Rust is built here, against whisper.cpp
# built here as shared libraries (whisper-rs-sys patched to link them, not to build its
# own static copy), and the same whisper.cpp sources are built there with CUDA: the Rust
# binary then runs on the GPU build through LD_LIBRARY_PATH. The f16 model (148 MB) does
# not fit; its q8_0 quantization (82 MB, asr/tests/model.rs shows it says what f16 says)
# travels in two parts.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
# Everything but cargo's target directory (a rebuild of it takes 15 minutes on 2 cores).
rm -rf .gpu/a .gpu/b .gpu/work/whisper.cpp .gpu/work/build .gpu/work/lib .gpu/work/whisper-rs-sys
mkdir -p .gpu/a .gpu/b .gpu/work

src=$(ls -d "$HOME"/.cargo/registry/src/*/whisper-rs-sys-0.15.0 | head -1)
[ -d "$src/whisper.cpp" ] || { echo "whisper-rs-sys 0.15.0 is not in the cargo registry: cargo fetch first" >&2; exit 1; }

# 1. whisper.cpp, pruned to what a CPU + CUDA build needs.
w=.gpu/work/whisper.cpp
mkdir -p $w/ggml/src
cp -r "$src"/whisper.cpp/{CMakeLists.txt,LICENSE,cmake,include,src,bindings} $w/
cp -r "$src"/whisper.cpp/ggml/{CMakeLists.txt,cmake,include} $w/ggml/
cp -r "$src"/whisper.cpp/ggml/src/{CMakeLists.txt,ggml-cpu,ggml-cuda} $w/ggml/src/
cp "$src"/whisper.cpp/ggml/src/*.{c,cpp,h} $w/ggml/src/
tar czf .gpu/a/whisper.cpp.tar.gz -C .gpu/work whisper.cpp

# 2. The same sources here as shared CPU libraries, to link against.
cmake -S $w -B .gpu/work/build -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_OPENMP=OFF -DGGML_METAL=OFF -DGGML_NATIVE=OFF \
  -DWHISPER_BUILD_TESTS=OFF -DWHISPER_BUILD_EXAMPLES=OFF > .gpu/work/cmake.log
cmake --build .gpu/work/build -j"$(nproc)" >> .gpu/work/cmake.log
mkdir -p .gpu/work/lib
cp -a .gpu/work/build/src/libwhisper.so* .gpu/work/build/ggml/src/libggml*.so* .gpu/work/lib/

# 3. asr-bench against them, through a patched whisper-rs-sys (Cargo.lock restored after).
cp -r "$src" .gpu/work/whisper-rs-sys
patch -d .gpu/work/whisper-rs-sys -p1 < tests/gpu/whisper-rs-sys-shared.patch
cp Cargo.lock .gpu/work/Cargo.lock
trap 'cp .gpu/work/Cargo.lock Cargo.lock' EXIT
HOTLINE_WHISPER_SHARED_DIR=$root/.gpu/work/lib cargo build --release -p e2e --bin asr-bench \
  --target-dir .gpu/work/target \
  --config "patch.crates-io.whisper-rs-sys.path=\"$root/.gpu/work/whisper-rs-sys\""
cp .gpu/work/target/release/asr-bench .gpu/b/asr-bench
strip .gpu/b/asr-bench

# 4. The model: q8_0, in two parts.
deploy/fetch-model.sh .dev/models/ggml-base.bin .gpu/work/ggml-base-q8_0.bin
head -c 55000000 .gpu/work/ggml-base-q8_0.bin > .gpu/a/model.part-a
tail -c +55000001 .gpu/work/ggml-base-q8_0.bin > .gpu/b/model.part-b
sha256sum .gpu/work/ggml-base-q8_0.bin

cp tests/gpu/device-build.sh .gpu/a/build.sh
cp tests/gpu/device-run.sh .gpu/b/run.sh
du -sh .gpu/a .gpu/b
