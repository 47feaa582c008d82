"""Unit timings of one decode round's parts, bundled model, CMTD's mean shape (I 1909, J 71).

    pytest benchmarks/ --benchmark-only [--benchmark-json out.json]

`prepare` (the movie's cached states, once per trailer), one cached `step` (the slot rows against
them), `score_slots` (best unused shot and its probability per slot), and one full pass over
[movie ; slots] (a round of the engine with refresh_every=1, and of the plain loop). Half the slots
are locked, as mid-way through a trailer. Each benchmark's extra_info holds the machine and shapes.
Without --benchmark-only the module skips itself, so a plain `pytest` stays fast.
"""

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from ssmp_infer import Engine  # noqa: E402
from ssmp_infer.bench import machine, synchronize, synthetic_movies  # noqa: E402
from ssmp_infer.data import slot_inputs  # noqa: E402
from ssmp_infer.kernels import score_slots  # noqa: E402

I, J = 1909, 71


@pytest.fixture(scope="module")
def setup(request):
    if not request.config.getoption("benchmark_only", False):
        pytest.skip("unit timings run with `pytest benchmarks/ --benchmark-only`")
    engine = Engine.load(device="auto")
    backend, device = engine.backend, engine.backend.device
    movie = torch.as_tensor(synthetic_movies(1, I, engine.feature_dim)[0], device=device)[None]  # (1, I, D)
    movie_valid = torch.ones(1, I, dtype=torch.bool, device=device)
    state = backend.prepare(movie, movie_valid)
    shots = torch.randperm(I, generator=torch.Generator().manual_seed(0))[:J].to(device)[None]  # (1, J)
    slot_masked = torch.arange(J, device=device)[None] % 2 == 0
    slot_valid = torch.ones(1, J, dtype=torch.bool, device=device)
    slots = slot_inputs(state.scoring_keys, shots)
    pred = backend.step(state, slots, slot_masked, slot_valid)
    used = torch.zeros(1, I, dtype=torch.bool, device=device).scatter_(1, shots[:, 1::2], True)
    return dict(engine=engine, movie=movie, movie_valid=movie_valid, state=state, slots=slots,
                slot_masked=slot_masked, slot_valid=slot_valid, pred=pred, used=used)


def timed(benchmark, setup, fn):
    device = setup["engine"].backend.device
    benchmark.extra_info.update(machine=machine(device), shots=I, slots=J, model=setup["engine"].source)

    def run():
        out = fn()
        synchronize(device)
        return out

    return benchmark(run)


def test_prepare(benchmark, setup):
    backend = setup["engine"].backend
    state = timed(benchmark, setup, lambda: backend.prepare(setup["movie"], setup["movie_valid"]))
    assert state.cache is not None  # prefix attention: the movie's states are cached


def test_step(benchmark, setup):
    backend, s = setup["engine"].backend, setup
    pred = timed(benchmark, setup, lambda: backend.step(s["state"], s["slots"], s["slot_masked"], s["slot_valid"]))
    torch.testing.assert_close(pred, s["pred"])


def test_score_slots(benchmark, setup):
    s, temperature = setup, setup["engine"].model_config.temperature
    best, prob = timed(benchmark, setup, lambda: score_slots(
        s["pred"], s["state"].scoring_keys, s["movie_valid"], s["used"], temperature, s["state"].shot_prior))
    assert best.shape == (1, J) and not s["used"].gather(1, best).any()


def test_full_pass(benchmark, setup):
    backend, s = setup["engine"].backend, setup
    full = backend.prepare(s["movie"], s["movie_valid"], refresh_every=1)  # no cache: every step is a whole pass
    pred = timed(benchmark, setup, lambda: backend.step(full, s["slots"], s["slot_masked"], s["slot_valid"]))
    torch.testing.assert_close(pred, s["pred"], atol=1e-4, rtol=1e-4)  # the cached step computes the same
