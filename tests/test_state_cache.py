"""Movie states kept across calls (ssmp_infer/state_cache.py): a second trailer of a movie already seen
runs only its rounds and is, bit for bit, the trailer a cold call gives, on every backend that runs
here; the cache is bounded in bytes, evicts the least recently used state, and is keyed by the movie's
content and how it was prepared."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ssmp_infer import DecodeConfig, EditorControls, Engine
from ssmp_infer.state_cache import state_bytes

BACKENDS = ["torch", "onnxruntime"]


def movie(shots: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((shots, 1024)).astype(np.float32)


def counting(engine: Engine) -> list:
    """Count the engine's encoder passes over a movie (`prepare`)."""
    calls, prepare = [], engine.backend.prepare

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return prepare(*args, **kwargs)

    engine.backend.prepare = counted
    return calls


# every kind of variation an editor asks for: (length, decode options, controls, candidates)
VARIATIONS = [
    (8, dict(mode="paper", seed=0), None, 0),
    (8, dict(mode="paper", seed=5), None, 0),
    (12, dict(mode="paper", seed=0), None, 0),
    (8, dict(mode="topk", steps=6), None, 0),
    (8, dict(mode="greedy"), None, 0),
    (8, dict(mode="paper", seed=1), EditorControls(pins={0: 40, 5: 7}), 0),
    (8, dict(mode="topk"), EditorControls(bans=frozenset(range(0, 100, 3))), 0),
    (6, dict(mode="paper", seed=2), EditorControls(pins={2: 11}, bans=frozenset({12, 13})), 3),
]


def trailers(engine: Engine, features: np.ndarray, variation):
    length, options, controls, candidates = variation
    decode = DecodeConfig(**options)
    if candidates:
        return [t.shots + t.confidence for t in engine.candidates(features, candidates, length, decode, controls)]
    t = engine.generate(features, length, decode, controls)
    return [t.shots + t.confidence + [t.steps]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_movie_seen_before_runs_only_its_rounds_and_gives_the_cold_trailer(backend):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'ssmp-infer[onnx]'")
    features = movie(300, 1)
    warm_engine = Engine.load(device="cpu", backend=backend)
    cold_engine = Engine.load(device="cpu", backend=backend, state_cache_mb=0)
    warm_calls, cold_calls = counting(warm_engine), counting(cold_engine)
    for k, variation in enumerate(VARIATIONS):
        got, want = trailers(warm_engine, features, variation), trailers(cold_engine, features, variation)
        assert got == want, f"variation {k}: the kept states gave another trailer"
    assert len(warm_calls) == 1 and len(cold_calls) == len(VARIATIONS)  # the movie's pass, once
    stats = warm_engine.states.stats
    assert (stats.misses, stats.hits, stats.entries) == (1, len(VARIATIONS) - 1, 1)
    assert cold_engine.states.stats.entries == 0


def test_the_key_is_the_movies_content_and_how_it_was_prepared():
    engine = Engine.load(device="cpu")
    calls = counting(engine)
    features = movie(200, 2)
    engine.generate(features, 5)
    engine.generate(features.copy(), 5)  # the same content in another array: kept
    changed = features.copy()
    changed[17, 3] += 0.5
    engine.generate(changed, 5)  # one value changed: another movie
    engine.generate(features, 5, DecodeConfig(refresh_every=1))  # prepared another way: another state
    assert len(calls) == 3 and engine.states.stats.hits == 1


def test_movies_that_differ_outside_the_keys_sample_are_told_apart_by_their_bytes():
    """The key digests a sample of the values; the bytes decide. A movie changed in a row the sample skips
    shares the key but not the states, and the caller changing its array after a call gets no stale state."""
    engine, cold = Engine.load(device="cpu"), Engine.load(device="cpu", state_cache_mb=0)
    calls = counting(engine)
    features = movie(320, 8)  # the key samples every 20th row, and every 16th value of it
    twin = features.copy()
    twin[3] = movie(1, 9)[0]  # a row the sample skips
    assert engine.states.key(twin, None).digest == engine.states.key(features, None).digest
    for value, sampled in (((20, 1), False), ((20, 16), True)):  # a sampled row: a skipped value, a sampled one
        changed = features.copy()
        changed[value] += 1.0
        assert (engine.states.key(changed, None).digest != engine.states.key(features, None).digest) == sampled
    first = engine.generate(features, 9, DecodeConfig(mode="topk"))
    second = engine.generate(twin, 9, DecodeConfig(mode="topk"))
    assert len(calls) == 2 and engine.states.stats.hits == 0  # the twin was prepared, not served the first's states
    assert second.shots == cold.generate(twin, 9, DecodeConfig(mode="topk")).shots
    assert len(engine.states) == 1 and engine.states.stats.evictions == 1  # the twin replaced the first
    engine.generate(twin, 9)
    assert len(calls) == 2 and engine.states.stats.hits == 1
    twin[3] = features[3]  # the caller changes its array in place: the cache kept its own copy
    again = engine.generate(twin, 9, DecodeConfig(mode="topk"))
    assert len(calls) == 3 and again.shots == first.shots and again.confidence == first.confidence


def test_a_kept_movie_is_not_scanned_again_and_a_changed_one_is(monkeypatch):
    import ssmp_infer.engine as engine_module
    from ssmp_infer.errors import InputError

    features = movie(300, 4).astype(np.float64) * 1e3  # not float32, not unit rows: the check changes it
    cold = Engine.load(device="cpu", state_cache_mb=0)
    want = [cold.generate(features, 9, DecodeConfig(mode="paper", seed=s)) for s in (0, 1, 2)]
    want_pinned = cold.candidates(features, 2, 9, DecodeConfig(), EditorControls(pins={0: 5}))
    scans = []
    check = engine_module.checked
    monkeypatch.setattr(engine_module, "checked", lambda *a: scans.append(a[0].dtype) or check(*a))
    engine = Engine.load(device="cpu")
    got = [engine.generate(features, 9, DecodeConfig(mode="paper", seed=s)) for s in (0, 1, 2)]
    pinned = engine.candidates(features, 2, 9, DecodeConfig(), EditorControls(pins={0: 5}))
    assert len(scans) == 1  # the first call's check; the kept states stand for it since
    assert [(t.shots, t.confidence) for t in got] == [(t.shots, t.confidence) for t in want]
    assert [t.shots for t in pinned] == [t.shots for t in want_pinned]
    assert engine.states.stats.hits == 3
    poisoned = features.copy()
    poisoned[123, 7] = np.nan  # one byte changed: another key, so the check runs and refuses it
    with pytest.raises(InputError, match="NaN or Inf"):
        engine.generate(poisoned, 9)
    assert engine.generate(features.astype(np.float32), 9).shots == want[0].shots
    assert len(scans) == 3 and len(engine.states) == 2  # float32 bytes are another array: checked, kept apart


def test_keep_movie_keeps_what_the_next_call_finds():
    engine = Engine.load(device="cpu")
    calls = counting(engine)
    features = movie(220, 6)
    assert engine.keep_movie(features)
    engine.generate(features, 7)
    engine.candidates(features, 2, 7)
    assert len(calls) == 1 and engine.states.stats.hits == 2
    assert not Engine.load(device="cpu", state_cache_mb=0).keep_movie(features)


def test_threads_decoding_one_kept_movie_at_once_get_the_cold_trailers():
    """A kept movie's states (and the room its rounds write the slots' rows into) are shared by every call
    that finds them; calls from a server's threads at once must still each get the cold trailer."""
    features = movie(300, 7)
    engine, cold = Engine.load(device="cpu"), Engine.load(device="cpu", state_cache_mb=0)
    asks = [(6 + k % 9, DecodeConfig(mode="topk" if k % 2 else "paper", seed=k)) for k in range(24)]
    want = [cold.generate(features, n, decode).shots for n, decode in asks]
    engine.keep_movie(features)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda ask: engine.generate(features, *ask).shots, asks * 3))
    assert got == want * 3 and engine.states.stats.misses == 1


def test_the_cache_is_bounded_in_bytes_and_evicts_the_least_recently_used():
    probe = Engine.load(device="cpu")
    probe.generate(movie(250, 0), 5)
    one = probe.states.stats.bytes  # what one 250-shot movie's states hold
    kept = next(iter(probe.states._states.values()))
    assert one == kept.size == state_bytes(kept.state) + kept.movie.nbytes > 2 * 250 * 1024 * 4  # states, and the copy

    engine = Engine.load(device="cpu", state_cache_mb=2.5 * one / 2**20)  # room for two such movies
    calls = counting(engine)
    a, b, c = movie(250, 10), movie(250, 11), movie(250, 12)
    for features in (a, b, a, c):  # c evicts b, the least recently used (a was used again)
        engine.generate(features, 5)
    assert engine.states.stats.evictions == 1 and engine.states.stats.bytes <= 2.5 * one and len(engine.states) == 2
    engine.generate(a, 5)
    assert len(calls) == 3  # a was kept
    engine.generate(b, 5)
    assert len(calls) == 4  # b was not
    tiny = Engine.load(device="cpu", state_cache_mb=0.5 * one / 2**20)  # a state larger than the limit
    tiny.generate(a, 5)
    assert len(tiny.states) == 0 and tiny.states.stats.bytes == 0


def test_a_negative_limit_is_one_sentence():
    from ssmp_infer.errors import InputError

    with pytest.raises(InputError, match="--state-cache-mb must be 0 or more"):
        Engine.load(device="cpu", state_cache_mb=-1)
