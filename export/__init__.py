"""Encoder export (installed as `ssmp_infer.export`): ONNX graphs matching the backend interface.

    from ssmp_infer.checkpoint import load_checkpoint
    from ssmp_infer.export import export_onnx
    model, _ = load_checkpoint()                      # the bundled model
    export_onnx(model, "out/")                        # prepare.onnx + step.onnx (or full.onnx + step.onnx)

`read_metadata(dir)` checks an export directory and returns its model config and weights hash;
`cached_onnx_dir(model)` is the export the onnxruntime backend makes on first use. TensorRT engines
(`export_tensorrt`) are not built yet: the call says what is missing in one sentence.
"""

from .onnx_export import OPSET, cached_onnx_dir, export_onnx, graph_names, read_metadata, weights_sha256


def export_tensorrt(model, out_dir, force: bool = False):
    from ssmp_infer.backends.tensorrt_backend import require_tensorrt

    require_tensorrt()


__all__ = ["OPSET", "export_onnx", "export_tensorrt", "read_metadata", "cached_onnx_dir", "graph_names", "weights_sha256"]
