"""ssmp-infer: inference engine for SSMP trailer generation (arXiv 2512.04426)."""

from setuptools import setup

# `kernels/` and `export/` are generic names, so they install inside the package namespace
# (`ssmp_infer.kernels`, `ssmp_infer.export`) and never claim a top-level module of that name.
setup(
    name="ssmp-infer",
    version="0.1.0",
    description="Self-paced, self-corrective masked prediction (SSMP) for movie trailer generation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["ssmp_infer", "ssmp_infer.backends", "ssmp_infer.kernels", "ssmp_infer.export"],
    package_dir={
        "ssmp_infer": "ssmp_infer",
        "ssmp_infer.kernels": "kernels",
        "ssmp_infer.export": "export",
    },
    package_data={"ssmp_infer": ["assets/default_model/*.json", "assets/default_model/*.safetensors"]},
    install_requires=["torch>=2.4", "numpy>=1.24", "safetensors>=0.4"],
    extras_require={
        # gpu extras arrive with the kernel work that needs them.
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.5"],
        "tensorrt": ["tensorrt>=10", "onnx>=1.16", "onnxscript>=0.5"],
        "test": ["pytest>=8", "pytest-benchmark>=4", "onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.5"],
    },
    entry_points={"console_scripts": ["ssmp-infer=ssmp_infer.cli:main"]},
)
