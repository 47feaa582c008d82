"""The names the command line offers and the code dispatches on, each set listed once. Nothing heavy is
imported here, so `--help` can read them without loading torch."""

BACKENDS = ("torch", "onnxruntime", "tensorrt")  # backends/: torch_backend, onnx_backend, tensorrt_backend
BASELINES = ("select-rank", "autoregressive")  # baselines/: the trained generators SSMP is compared with
METHODS = ("ssmp", "random", *BASELINES)  # what `eval --method` scores (random needs no model)
DETECTORS = ("auto", "transnetv2", "content")  # video/shots.py: shot boundary detectors
COMPARE_ROWS = ("random", "select-rank", "autoregressive", "ssmp", "ssmp-topk", "ssmp-greedy", "ssmp-uniform",
                "ssmp-linear-asc", "ssmp-linear-desc")  # compare.ROWS, in table order
