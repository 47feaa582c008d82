#!/usr/bin/env bash
# Every GPU-only check of this project in one device call, for a session that is lent a GPU:
#   run(command="bash benchmarks/gpu_session.sh", timeout_s=560)
# It installs the working tree without dependencies (the device machine is offline; its image has
# torch, triton, onnx and onnxruntime), then runs each check under its own time limit, whatever the
# others did, and always ends with $OUT/summary.txt: one line per check (its exit status, seconds, the
# last line of its log). Sized for 8 minutes on one H100: 30 + 200 + 90 + 120 + 60 s of limits.
# Each log is under $OUT (env.txt, install.log, tests.log, bench_*.log with a JSON last line).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
: > "$OUT/summary.txt"

check() {  # check NAME SECONDS COMMAND...: run it under `timeout`, log it, note it in the summary
  local name=$1 limit=$2 start=$SECONDS status
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  status=$?
  [ $status -eq 124 ] && status="124 (past its ${limit} s)"
  printf '%-22s exit %s, %3d s: %s\n' "$name" "$status" $((SECONDS - start)) \
    "$(tail -n 1 "$OUT/$name.log" | cut -c1-300)" >> "$OUT/summary.txt"
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  git rev-parse HEAD 2>/dev/null || echo "commit: unknown (working tree copy)"
  python3 -c "import sys, torch, triton, onnxruntime as ort; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'onnxruntime', ort.__version__, ort.get_available_providers())"
  python3 -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 | tail -n 1
} > "$OUT/env.txt" 2>&1
check install 30 python3 -m pip install -q --no-deps --no-build-isolation -e .
# GPU-only tests (each skips on a CPU): the kernels compiled for this GPU, no host sync in a round, CUDA
# graphs (step and whole round), the ORT CUDA path, TensorRT where installed. No -x: every test reports.
check tests 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_runtime.py \
  tests/test_tensorrt.py tests/test_onnx.py tests/test_golden_trailers.py
check bench_kernels 90 python3 benchmarks/bench_kernels.py --batch-sizes 1,8,64 --repeats 10 --check-trailers 2
check bench_gpu_throughput 120 python3 benchmarks/bench_gpu_throughput.py --presets demo,paper --batch-sizes 1,16,64 \
  --movies 64
check bench_engine 60 python3 -m ssmp_infer.cli bench --device cuda --precisions fp32,bf16 --batch-sizes 1,16 --repeats 3
cat "$OUT/summary.txt"
