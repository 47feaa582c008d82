#!/usr/bin/env bash
# Every GPU-only check of this project in one device call, for a session that is lent a GPU:
#   run(command="bash benchmarks/gpu_session.sh", timeout_s=560)
# It installs the working tree without dependencies (the device machine is offline; its image has
# torch, triton, onnx and onnxruntime), then runs the GPU-only tests and the three GPU benchmarks,
# each under a time cap, and leaves everything under $OUT (env.txt, tests.log, *.log with a JSON last
# line). Nothing here has run yet: no GPU was lent to the sessions that wrote it.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  git rev-parse HEAD 2>/dev/null || echo "commit: unknown (working tree copy)"
  python3 -c "import sys, torch, triton, onnxruntime as ort; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'onnxruntime', ort.__version__, ort.get_available_providers())"
} > "$OUT/env.txt" 2>&1
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 || echo "install failed: see install.log" >> "$OUT/env.txt"
# GPU-only tests first (each one skips on a CPU): the kernels compiled for this GPU, no host sync in a
# round, CUDA graphs (step and whole round), TensorRT where installed, then the CPU suites they touch.
timeout 200 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels.py tests/test_runtime.py tests/test_tensorrt.py \
  > "$OUT/tests.log" 2>&1
timeout 100 python3 benchmarks/bench_kernels.py --batch-sizes 1,8,64 --repeats 10 --check-trailers 2 > "$OUT/bench_kernels.log" 2>&1
timeout 150 python3 benchmarks/bench_gpu_throughput.py --presets demo,paper --batch-sizes 1,16,64 --movies 64 \
  > "$OUT/bench_gpu_throughput.log" 2>&1
timeout 80 python3 -m ssmp_infer.cli bench --device cuda --precisions fp32,bf16 --batch-sizes 1,16 --repeats 3 \
  > "$OUT/bench_engine.log" 2>&1
tail -n 3 "$OUT"/*.log
