"""Encoder export (installed as `ssmp_infer.export`): ONNX graphs matching the backend interface, and
TensorRT engines built from them.

    from ssmp_infer.checkpoint import load_checkpoint
    from ssmp_infer.export import export_onnx, export_tensorrt
    model, _ = load_checkpoint()                      # the bundled model
    export_onnx(model, "out/")                        # prepare.onnx + step.onnx (or full.onnx + step.onnx)
    export_tensorrt(model, "engines/")                # prepare.engine + step.engine + engines.json (GPU)

`read_metadata(dir)` checks an export directory and returns its model config and weights hash;
`cached_onnx_dir(model)` is the export the onnxruntime backend makes on first use. TensorRT engines
need the tensorrt extra and an NVIDIA GPU (without them `export_tensorrt` says so in one sentence);
they are built in fp16 for the shapes of `Profiles`, and `cached_engine_dir(model, device)` is the
build the tensorrt backend makes on first use. See tensorrt_export.py.
"""

from .onnx_export import OPSET, cached_onnx_dir, export_onnx, graph_names, read_metadata, weights_sha256
from .tensorrt_export import (
    TENSORRT_OPSET, Profiles, build_engines, cached_engine_dir, engine_cache_key, export_fp16_onnx, export_tensorrt,
    read_engine_metadata,
)

__all__ = [
    "OPSET", "export_onnx", "read_metadata", "cached_onnx_dir", "graph_names", "weights_sha256",
    "TENSORRT_OPSET", "Profiles", "export_tensorrt", "build_engines", "cached_engine_dir", "engine_cache_key",
    "export_fp16_onnx", "read_engine_metadata",
]
