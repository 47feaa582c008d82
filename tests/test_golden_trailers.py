"""The decoder gives the trailers it gave before it was rewritten: the same shots, steps and seeds, and the
same confidences (to float32 rounding), in every mode, with pins, bans, candidates and batches of movies
that finish in different rounds, on each backend that runs here (tests/golden_trailers.py made the file)."""

import json

import numpy as np
import pytest
import torch

from .golden_trailers import BACKENDS, CASES, GOLDEN, decode_all

from ssmp_infer.engine import Engine

EXPECTED = json.loads(GOLDEN.read_text())


def same_trailers(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        for k, (a, b) in enumerate(zip(got[name], expected[name], strict=True)):
            where = f"{name}, trailer {k}"
            assert (a["shots"], a["steps"], a["seed"]) == (b["shots"], b["steps"], b["seed"]), where
            np.testing.assert_allclose(a["confidence"], b["confidence"], rtol=1e-5, atol=1e-7, err_msg=where)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_case_gives_its_golden_trailers(backend):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'ssmp-infer[onnx]'")
    same_trailers(decode_all(Engine.load(device="cpu", backend=backend)), EXPECTED[backend])


FUSED_CASES = ["paper, 3 rounds then the greedy fill", "topk, pins and bans", "greedy, pins", "paper, 3 candidates with a pin"]


def test_the_fused_rounds_give_the_golden_trailers():
    """The Triton rounds (the interpreter on the CPU) make the eager rounds' decisions: torch's trailers."""
    from ssmp_infer.kernels import HAS_TRITON, INTERPRETED

    if not HAS_TRITON or not (INTERPRETED or torch.cuda.is_available()):
        pytest.skip("the fused rounds need triton and CUDA or TRITON_INTERPRET=1 (tests/conftest.py sets it)")
    got = decode_all(Engine.load(device="cpu"), FUSED_CASES, kernels="triton")
    same_trailers(got, {name: EXPECTED["torch"][name] for name in FUSED_CASES})


def test_the_golden_file_covers_what_the_decoder_does():
    """The file is not empty or trivial: batches whose movies finish in different rounds, pins that hold,
    bans that are kept out, and candidates that differ."""
    golden = EXPECTED["torch"]
    assert set(golden) == set(CASES)
    assert len({t["steps"] for t in golden["paper"]}) > 1  # rows leave the batch at different rounds
    pinned = golden["paper, pins and bans"][0]["shots"]
    assert pinned[0] == 12 and pinned[4] == 40 and not {1, 2, 3} & set(pinned)
    assert not set(golden["paper, pins and bans"][2]["shots"]) & set(range(0, 60, 2))
    assert len({tuple(t["shots"]) for t in golden["paper, 4 candidates"]}) > 1
