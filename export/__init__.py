"""Encoder export (installed as `ssmp_infer.export`): ONNX graphs and TensorRT engines of the
`SSMPEncoder.forward` signature the backends share. Filled in by the export work; nothing here yet."""
