#!/usr/bin/env bash
# Every GPU check in one go, for a lent CUDA machine whose python3 has torch/transformers/scipy/pandas
# (the project's own venv is not needed): the CUDA tests, the study-size graph benchmark, the capture
# benchmark at Gemma 2 2B's shape. Each step has its own time limit and a failing step does not stop the
# next. Logs and result tables go to ${OUT:-gpu-check-output}/.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-output}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
{ nvidia-smi -L; nproc; $PY -c "import torch, transformers, numpy, scipy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__)"; } 2>&1 | tee "$OUT/env.txt"

echo "== CUDA tests"
timeout "${T_TESTS:-170}" $PY -m pytest -p no:cacheprovider -o addopts="" -q -m "not slow" \
  actgeo_tests/lib/graph/test_cuda.py actgeo_tests/lib/graph/test_graph.py actgeo_tests/lib/capture/test_capture.py \
  2>&1 | tee "$OUT/pytest.log" | tail -40
echo "pytest exit: ${PIPESTATUS[0]}"

echo "== graph benchmark, study size"
timeout "${T_GRAPH:-200}" $PY benchmarks/gpu_bench_graph.py --n "${N:-1000000}" --d 2304 --check 20000 \
  --out "$OUT/graph_gpu.md" 2>&1 | grep -v '^\s*$' | tail -30
echo "graph exit: ${PIPESTATUS[0]}"

echo "== capture benchmark, Gemma 2 2B shape"
timeout "${T_CAPTURE:-90}" $PY benchmarks/gpu_bench_capture.py --tokens 200000 --out "$OUT/capture_gpu.md" 2>&1 | tail -20
echo "capture exit: ${PIPESTATUS[0]}"
