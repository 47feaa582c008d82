"""torch against ONNX Runtime (fp32 and int8) and TensorRT (where present) behind the same
prepare/step interface: the movie pass, one round's step, and a whole trailer, in one process.

    python benchmarks/bench_backends.py [--model DIR] [--presets demo,paper] [--shots 1909,400] [--repeats 5]

Presets: "demo" is the bundled model (or --model); "paper" is the paper's size (d 1024, 4 layers,
34M parameters) with random weights (seed 0): no paper-size model is trained here, and speed does not
depend on the weights. Ratios are each backend's time over torch fp32's, measured in the same run.
"same shots": the backend's topk trailer equals torch fp32's. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.backends import TorchBackend
from ssmp_infer.backends.onnx_backend import OnnxRuntimeBackend
from ssmp_infer.export.tensorrt_runtime import HAS_TENSORRT
from ssmp_infer.bench import machine, measure, parse_list, synthetic_movies
from ssmp_infer.checkpoint import load_checkpoint
from ssmp_infer.config import model_preset
from ssmp_infer.data import default_trailer_length, pad_batch
from ssmp_infer.export import export_onnx
from ssmp_infer.model import SSMPEncoder


def preset_model(preset: str, model_dir: str | None) -> tuple[SSMPEncoder, str]:
    if preset == "demo":
        model, _ = load_checkpoint(model_dir)
        return model.eval(), model_dir or "bundled:default"
    torch.manual_seed(0)
    return SSMPEncoder(model_preset(preset)).eval(), f"{preset} preset, random weights (seed 0)"


def engines_for(model: SSMPEncoder, workdir: str, device: torch.device) -> dict[str, Engine]:
    """torch fp32 first (the baseline), then ONNX Runtime fp32 and int8 from fresh exports, then
    TensorRT fp16 on a CUDA device with tensorrt installed."""
    engines = {"torch": Engine(model.cfg, TorchBackend(model, device))}
    if device.type == "cpu":
        for precision in ("fp32", "int8"):
            onnx_dir = f"{workdir}/{precision}"
            export_onnx(model, onnx_dir, precision=precision)
            backend = OnnxRuntimeBackend.for_model(model, device, onnx_dir, precision)
            engines[f"onnxruntime-{precision}"] = Engine(model.cfg, backend)
    else:
        engines["onnxruntime-fp32"] = Engine(model.cfg, OnnxRuntimeBackend.for_model(model, device, None))
        if HAS_TENSORRT:
            from ssmp_infer.backends.tensorrt_backend import TensorRTBackend

            engines["tensorrt-fp16"] = Engine(model.cfg, TensorRTBackend.for_model(model, device))
    return engines


def bench_engines(engines: dict[str, Engine], shots: int, repeats: int, device: torch.device) -> dict:
    cfg = engines["torch"].model_config
    movie_np = synthetic_movies(1, shots, cfg.feature_dim)[0]
    length = default_trailer_length(shots)
    movie, valid = pad_batch([movie_np])
    movie, valid = movie.to(device), valid.to(device)
    slot_valid = torch.ones(1, length, dtype=torch.bool, device=device)
    slot_masked = (torch.arange(length, device=device) % 2 == 0)[None]  # half the slots open, as mid-decoding
    decode = DecodeConfig(mode="topk")
    row: dict = {"shots": shots, "length": length}
    trailers = {}
    for name, engine in engines.items():
        backend = engine.backend
        state = backend.prepare(movie, valid)
        slots = state.scoring_keys[:, :length]
        timed = {
            "prepare": lambda: backend.prepare(movie, valid),
            "step": lambda: backend.step(state, slots, slot_masked, slot_valid),
            "trailer_topk": lambda: engine.generate(movie_np, length, decode),
        }
        for what, fn in timed.items():
            fn()  # warm-up
            row[f"{name}_{what}_ms"] = measure(fn, device, repeats)["median_ms"]
        trailers[name] = engine.generate(movie_np, length, decode).shots
    for name in engines:
        if name == "torch":
            continue
        for what in ("prepare", "step", "trailer_topk"):
            row[f"{name}_over_torch_{what}"] = row[f"{name}_{what}_ms"] / row[f"torch_{what}_ms"]
        row[f"{name}_same_shots"] = trailers[name] == trailers["torch"]
        row[f"{name}_shots_in_common"] = len(set(trailers[name]) & set(trailers["torch"])) / length
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None, help="the demo row's checkpoint (default: the bundled model)")
    p.add_argument("--presets", default="demo,paper")
    p.add_argument("--shots", default="1909,400")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    rows = []
    for preset in parse_list(args.presets, "--presets", choices=("demo", "paper")):
        model, source = preset_model(preset, args.model)
        with tempfile.TemporaryDirectory(prefix="bench_backends.") as workdir:
            engines = engines_for(model.to(device), workdir, device)
            for shots in parse_list(args.shots, "--shots", int):
                row = {"preset": preset, "model": source, **bench_engines(engines, shots, args.repeats, device)}
                rows.append(row)
                print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    print(json.dumps({"benchmark": "bench_backends", "machine": machine(device), "rows": rows}))


if __name__ == "__main__":
    main()
