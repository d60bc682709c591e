#!/bin/bash
# Device call 1 (tests/gpu/README.md): whisper.cpp 1.8.3 (whisper-rs-sys 0.15's vendored
# copy) as shared libraries with CUDA for the H100 (sm_90), into /root/keep/lib, and the
# model's first part into /root/keep, which call 2 finds while the machine stays warm.
set -u
R=$PWD
K=/root/keep
mkdir -p $K && cp .gpu/a/model.part-a $K/ && cd $K && tar xzf $R/.gpu/a/whisper.cpp.tar.gz
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
command -v nvcc || export PATH=/usr/local/cuda/bin:$PATH
nvcc --version | tail -1; cmake --version | head -1; nproc
ls /usr/local/cuda/lib64 2>/dev/null | grep -E '^lib(cublas|cudart)\.so$' || echo "no cublas in /usr/local/cuda/lib64"
G=""; command -v ninja >/dev/null && G="-G Ninja"
# GGML_CUDA_FA=OFF: the gateway runs whisper with flash_attn off (docs/asr.md).
cmake -S whisper.cpp -B build $G -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DGGML_OPENMP=OFF \
  -DGGML_METAL=OFF -DWHISPER_BUILD_TESTS=OFF -DWHISPER_BUILD_EXAMPLES=OFF > cmake.log 2>&1 \
  || { tail -40 cmake.log; find / -name 'libcublas.so*' -not -path '/proc/*' 2>/dev/null | head; exit 3; }
grep -i 'cuda' cmake.log | head -8
start=$(date +%s)
cmake --build build -j16 > build.log 2>&1 || { grep -i -B2 -A8 'error' build.log | head -60; exit 4; }
echo "built in $(( $(date +%s) - start )) s"
mkdir -p lib && cp -a build/src/libwhisper.so* $(find build/ggml -name 'libggml*.so*') lib/
ls lib
LD_LIBRARY_PATH=$K/lib ldd lib/libggml-cuda.so | grep -E 'cublas|cudart|not found'
