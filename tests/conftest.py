"""Set up before any test module is imported.

Triton reads TRITON_INTERPRET once, when it and the kernels are imported, so it must be set before any
test module imports ssmp_infer (whose kernels import triton). Without a CUDA device the interpreter is
the only way a Triton kernel runs: tests/test_kernels.py runs them there on CPU tensors. Nothing else
changes: kernels "auto" resolves to torch under the interpreter, and no other code here uses Triton.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
