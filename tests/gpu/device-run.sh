#!/bin/bash
# Device call 2 (tests/gpu/README.md): the asr-bench binary built on the CPU machine,
# linked to shared whisper.cpp, runs on the CUDA libraries of call 1; then the same
# binary on the same machine's CPU, as the baseline.
set -u
K=/root/keep
[ -d $K/lib ] || { echo "no /root/keep/lib: call 1 did not run on this machine"; exit 5; }
cat $K/model.part-a .gpu/b/model.part-b > $K/ggml-base-q8_0.bin
sha256sum $K/ggml-base-q8_0.bin
export LD_LIBRARY_PATH=$K/lib
B=.gpu/b/asr-bench; M=$K/ggml-base-q8_0.bin; F=tests/fixtures/speech
chmod +x $B
ldd $B | grep -E 'whisper|ggml'
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
echo "## GPU: calls 50 ms apart"
RUST_LOG=whisper_rs=info timeout 220 $B --model $M --fixtures $F --threads 4 --workers 8 \
  --queue 64 --stagger-ms 50 --sections throughput,live --calls 1,32,64,128,192 2> $OUT/gpu.err | tee $OUT/gpu.md
grep -iE 'backend|CUDA|device 0' $OUT/gpu.err | sort | uniq -c | head -8
echo "## GPU: more calls, 20 ms apart"
timeout 150 $B --model $M --fixtures $F --threads 4 --workers 8 --queue 256 --stagger-ms 20 \
  --sections live --calls 256,384,512 2> $OUT/gpu2.err | tee $OUT/gpu2.md
echo "## CPU, same machine, same binary"
timeout 100 $B --model $M --fixtures $F --cpu-only --threads 4 --workers 4 --sections throughput,live --calls 1,8 \
  2> $OUT/cpu.err | tee $OUT/cpu.md
tail -3 $OUT/cpu.err
