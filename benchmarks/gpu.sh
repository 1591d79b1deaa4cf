#!/usr/bin/env bash
# One GPU batch: the CUDA tests, then the benchmarks' GPU figures into $OUT (default ./gpu-out).
# Run from the repository root on a machine with CUDA, torch and transformers (no venv needed):
#   OUT=gpu-out bash benchmarks/gpu.sh
# vs_hf runs in two parts to bound each one's time; merge their JSON files into book/data/vs_hf_cuda.json.
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONDONTWRITEBYTECODE=1
nvidia-smi -L; python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
t0=$(date +%s)
timeout 130 python3 -m pytest tests/test_cuda.py tests/test_01_attention.py -q -p no:cacheprovider 2>&1 | tail -15 | tee $OUT/cuda_tests.txt
echo "tests: $(( $(date +%s) - t0 )) s"
timeout 200 python3 benchmarks/vs_hf.py --device cuda --only bandwidth small large --json $OUT/vs_hf_cuda_a.json > $OUT/vs_hf_a.txt 2>&1; tail -30 $OUT/vs_hf_a.txt
echo "vs_hf a: $(( $(date +%s) - t0 )) s"
timeout 100 python3 benchmarks/vs_hf.py --device cuda --only ttft attention decode memory --json $OUT/vs_hf_cuda_b.json > $OUT/vs_hf_b.txt 2>&1; tail -25 $OUT/vs_hf_b.txt
echo "vs_hf b: $(( $(date +%s) - t0 )) s"
timeout 60 python3 benchmarks/flash_attention.py --device cuda --dtype float16 --lengths 1024 4096 16384 --json $OUT/flash_attention_cuda.json > $OUT/flash.txt 2>&1; tail -20 $OUT/flash.txt
timeout 60 python3 benchmarks/weight_layout.py --device cuda --dtype bfloat16 --json $OUT/weight_layout_cuda.json > $OUT/layout.txt 2>&1; tail -16 $OUT/layout.txt
echo "all: $(( $(date +%s) - t0 )) s"
