"""Defects found by feeding bad or extreme input: each test here failed before its fix.

1. `generate` took a trailer longer than a movie's real shots and returned repeated shots.
2. A finite row of 1e20 normalised to zero (float32 norm overflow), a row of 1e-30 to near zero.
3. `eval --batch-size 0` raised a traceback, `--batch-size -1` printed NaN.
4. A --seed of 2^63 or more (or below 0) raised a traceback.
5. A config.json without "model", or with a wrongly typed or absurd field, raised a traceback.
6. With a tolerance, one true shot could be matched by several predicted ones.
7. topk with more rounds than slots paid encoder passes for rounds that locked nothing.
"""

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssmp_infer import cli
from ssmp_infer.backends import TorchBackend
from ssmp_infer.checkpoint import load_checkpoint, save_checkpoint
from ssmp_infer.config import DecodeConfig, ModelConfig
from ssmp_infer.data import pad_batch, slot_inputs, unit_rows, validate_features
from ssmp_infer.decode import DecodeState, cosine_schedule, generate, lock_most_confident
from ssmp_infer.engine import Engine
from ssmp_infer.errors import InputError
from ssmp_infer.kernels import score_slots
from ssmp_infer.metrics import match_shots, order_agreement, score_trailer
from ssmp_infer.model import SSMPEncoder

from .helpers import assert_close

D = 16
CFG = ModelConfig(feature_dim=D, d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0, temperature=0.05)
MODES = ["paper", "topk"]


def tiny_encoder(cfg=CFG):
    torch.manual_seed(0)
    return SSMPEncoder(cfg).eval()


def movies(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, D)).astype(np.float32) for n in sizes]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_checkpoint(tiny_encoder(), tmp_path_factory.mktemp("tiny_model"), {"note": "untrained, for tests"})


@pytest.fixture(scope="module")
def movie_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("movie") / "movie.npy"
    np.save(path, movies([30])[0])
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Three movies per split in the CMTD layout; trailers are exact copies of some of their shots."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for folder in ("movie_shot_embs", "trailer_shot_embs"):
            (root / split / folder).mkdir(parents=True)
        for k, movie in enumerate(movies([20, 24, 21], seed=len(split))):
            np.save(root / split / "movie_shot_embs" / f"m{k}.npy", movie)
            np.save(root / split / "trailer_shot_embs" / f"m{k}.npy", movie[rng.choice(20, 4, replace=False)])
    return root


def fails(capsys, *argv, words=()):
    """`main` returns 2 and writes exactly one line, `ssmp-infer: error: ...`, naming `words`; no traceback."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_BAD_INPUT, (code, err)
    assert err.startswith("ssmp-infer: error:") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    for word in words:
        assert word.lower() in err.lower(), err
    return err


def run_cli(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    argv = [sys.executable, "-m", "ssmp_infer.cli", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, env=env)


def assert_subprocess_fails(result, *words):
    assert result.returncode == cli.EXIT_BAD_INPUT, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("ssmp-infer: error:") and result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word.lower() in result.stderr.lower(), result.stderr


# --- 1. generate checks each movie's length against its own real shots -------------------------


@pytest.mark.parametrize("mode", MODES)
def test_generate_refuses_a_length_outside_one_to_the_movies_real_shots(mode):
    backend = TorchBackend(tiny_encoder())
    movie, valid = pad_batch(movies([5, 8]))  # movie 0 is padded to 8 shots but has 5 real ones
    config = DecodeConfig(mode=mode)
    for lengths in ([6, 3], [5, 9], [0, 3], [2, -1]):
        with pytest.raises(InputError, match="real shots"):
            generate(backend, movie, valid, torch.tensor(lengths), config, CFG.temperature)
    result = generate(backend, movie, valid, torch.tensor([5, 8]), config, CFG.temperature)  # the limits
    assert sorted(result.shots[0, :5].tolist()) == list(range(5)) and result.shots[0, 5:].tolist() == [-1] * 3
    assert sorted(result.shots[1].tolist()) == list(range(8))


# --- 2. rows of any finite scale ------------------------------------------------------------------


def extreme_rows(unit: np.ndarray, dtype, big: float, small: float) -> np.ndarray:
    x = unit.astype(dtype)
    x[3] *= big
    x[7] *= small
    return x


@pytest.mark.parametrize(
    "dtype, big, small",
    [(np.float32, 1e20, 1e-30), (np.float32, 3e38, 1e-33), (np.float64, 1e200, 1e-200), (np.float64, 1e300, 1e-310)],
)
def test_rows_of_extreme_scale_give_the_trailer_of_unit_rows(dtype, big, small):
    unit = unit_rows(movies([30], seed=4)[0].astype(np.float64)).astype(np.float32)
    extreme = extreme_rows(unit, dtype, big, small)
    engine = Engine(CFG, TorchBackend(tiny_encoder()))
    for mode in MODES:
        want = engine.generate(unit, 8, DecodeConfig(mode=mode, seed=3))
        got = engine.generate(extreme, 8, DecodeConfig(mode=mode, seed=3))
        assert got.shots == want.shots
        assert not np.isnan(got.confidence).any()
        np.testing.assert_allclose(got.confidence, want.confidence, rtol=1e-5, atol=1e-7)

    feats = validate_features(extreme, "movie")
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    np.testing.assert_allclose(unit_rows(feats), unit, atol=1e-6)


def test_float32_rows_scale_to_the_bits_of_the_float64_route():
    """float32 input is scaled in float32 (no float64 copy): the same bits as scaling it in float64 and
    casting, down to rows whose small entries end up subnormal or zero."""
    x = movies([12], seed=6)[0].astype(np.float32)
    x[1] *= np.float32(3e38) / np.abs(x[1]).max()
    x[2] *= np.float32(1e-38)
    x[3, :5] = [1e30, 1e-30, -1e-40, 1e-45, 0.0]
    x[4] = np.float32(1e-42)
    got = validate_features(x, "movie")
    _, exponent = np.frexp(np.abs(x).max(axis=1).astype(np.float64))
    want = np.ldexp(x.astype(np.float64), -exponent[:, None]).astype(np.float32)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.all(np.abs(got).max(axis=1) >= 0.5) and np.all(np.abs(got).max(axis=1) < 1)


def test_an_all_zero_row_is_still_refused():
    x = movies([10])[0]
    x[4] = 0
    with pytest.raises(InputError, match="shot 4 .* all zeros"):
        validate_features(x, "movie")


# --- 3. eval --batch-size -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1])
def test_eval_refuses_a_batch_size_below_one(size, capsys, tiny_data):
    words = ("--batch-size", "at least 1")
    fails(capsys, "eval", "--data", tiny_data, "--method", "random", "--batch-size", size, words=words)


def test_eval_batch_size_one_still_works(capsys, tiny_data, tiny_model):
    assert cli.main(["eval", "--data", str(tiny_data), "--model", str(tiny_model), "--batch-size", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["movies"] == 3 and 0 <= summary["f1"] <= 1


# --- 4. --seed in [0, 2^63) -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**63, 2**64 + 5, -1])
def test_a_seed_outside_0_to_2_to_the_63_is_one_sentence(seed, capsys, tiny_model, movie_file, tiny_data, tmp_path):
    fails(capsys, "run", movie_file, "--model", tiny_model, "--seed", seed, words=("--seed", str(seed)))
    fails(capsys, "eval", "--data", tiny_data, "--model", tiny_model, "--seed", seed, words=("--seed",))
    fails(capsys, "eval", "--data", tiny_data, "--method", "random", "--seed", seed, words=("--seed",))
    out = tmp_path / "m"
    fails(capsys, "train", "--data", tiny_data, "--out", out, "--epochs", 1, "--seed", seed, words=("--seed",))
    assert not out.exists()


def test_the_seed_limits_themselves_work(capsys, tiny_model, movie_file):
    for seed in (0, 2**63 - 1):
        assert cli.main(["run", str(movie_file), "--model", str(tiny_model), "--length", "5", "--seed", str(seed)]) == 0
        assert len(set(json.loads(capsys.readouterr().out)["shots"])) == 5
    assert cli.seed_arg(" 17 ") == 17


@pytest.mark.parametrize("text", ["-1", str(2**63), "1.5", "1e3", "seven", ""])
def test_seed_arg_refuses_what_is_not_a_seed(text):
    with pytest.raises(argparse.ArgumentTypeError, match="2\\^63"):  # argparse makes it one usage line
        cli.seed_arg(text)


def test_a_huge_seed_in_a_real_process(tiny_model, movie_file):
    assert_subprocess_fails(run_cli("run", movie_file, "--model", tiny_model, "--seed", 2**63), "--seed", "2^63")


# --- 5. a checkpoint config.json is user input ----------------------------------------------------


def _set(field, value):
    return lambda meta: meta["model"].__setitem__(field, value)


BAD_CONFIGS = {
    "no_model_key": (lambda meta: meta.pop("model"), ('"model"',)),
    "model_null": (lambda meta: meta.__setitem__("model", None), ('"model"', "null")),
    "model_list": (lambda meta: meta.__setitem__("model", [32, 1]), ('"model"',)),
    "d_model_str": (_set("d_model", "32"), ("d_model", "integer")),
    "d_model_float": (_set("d_model", 32.0), ("d_model", "integer")),
    "d_model_bool": (_set("d_model", True), ("d_model", "integer")),
    "n_heads_float": (_set("n_heads", 2.0), ("n_heads", "integer")),
    "n_layers_bool": (_set("n_layers", False), ("n_layers", "integer")),
    "feature_dim_null": (_set("feature_dim", None), ("feature_dim", "integer")),
    "dropout_5": (_set("dropout", 5), ("dropout", "[0, 1)")),
    "dropout_str": (_set("dropout", "0.1"), ("dropout", "number")),
    "temperature_str": (_set("temperature", "x"), ("temperature", "number")),
    "temperature_bool": (_set("temperature", True), ("temperature", "number")),
    "movie_attention_int": (_set("movie_attention", 1), ("movie_attention", "string")),
    "d_model_2_20": (_set("d_model", 2**20), ("d_model", "16384")),
    "feature_dim_2_20": (_set("feature_dim", 2**20), ("feature_dim", "65536")),
    "n_layers_1000": (_set("n_layers", 1000), ("n_layers", "256")),
    "d_ff_2_30": (_set("d_ff", 2**30), ("d_ff", "65536")),
}


def broken_copy(tiny_model, tmp_path, mutate):
    directory = tmp_path / "model"
    shutil.copytree(tiny_model, directory)
    meta = json.loads((directory / "config.json").read_text())
    mutate(meta)
    (directory / "config.json").write_text(json.dumps(meta))
    return directory


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_model_config_is_one_sentence_naming_the_field(case, capsys, tiny_model, movie_file, tmp_path):
    mutate, words = BAD_CONFIGS[case]
    directory = broken_copy(tiny_model, tmp_path, mutate)
    with pytest.raises(InputError) as info:
        load_checkpoint(directory)
    for word in words:
        assert word.lower() in str(info.value).lower(), info.value
    fails(capsys, "run", movie_file, "--model", directory, words=("config.json", *words))


def test_a_bad_model_config_in_a_real_process(tiny_model, movie_file, tmp_path):
    directory = broken_copy(tiny_model, tmp_path, _set("d_model", "32"))
    assert_subprocess_fails(run_cli("run", movie_file, "--model", directory), "d_model", "integer")


def test_model_config_accepts_ints_for_floats_and_keeps_its_fields():
    cfg = ModelConfig.from_dict({**CFG.to_dict(), "dropout": 0, "temperature": 1})
    assert (cfg.dropout, cfg.temperature, cfg.movie_attention, cfg.head_dim) == (0, 1, CFG.movie_attention, 16)
    with pytest.raises(InputError, match="object"):
        ModelConfig.from_dict(None)


# --- 6. one-to-one matching of predicted and true shots -------------------------------------------


def test_one_true_shot_is_matched_once_by_hand():
    s = score_trailer([9, 10, 11], [10, 50, 90], tolerance=1)
    assert (s.precision, s.recall) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert s.f1 == pytest.approx(1 / 3) and s.aa is None
    # a nearest-first choice could give 6 the prediction 7 and leave 8 unmatched; the maximum is 2
    s = score_trailer([5, 7], [6, 8], tolerance=1)
    assert (s.precision, s.recall) == (1.0, 1.0)


def test_order_agreement_uses_the_same_matching_by_hand():
    # matched: 5 <-> 6 (true slot 0), 7 <-> 8 (slot 1); predicted order 7, 5 is the reverse of the truth
    assert order_agreement([7, 5], [6, 8], tolerance=1) == 0.0
    assert score_trailer([7, 5], [6, 8], tolerance=1).aa == 0.0
    assert order_agreement([5, 7], [6, 8], tolerance=1) == 1.0


def brute_force_matching_size(pred, truth, tolerance):
    """The largest one-to-one matching, by trying every partner (or none) for each true shot."""
    if not truth:
        return 0
    t, rest = truth[0], truth[1:]
    best = brute_force_matching_size(pred, rest, tolerance)
    for a, p in enumerate(pred):
        if abs(p - t) <= tolerance:
            best = max(best, 1 + brute_force_matching_size(pred[:a] + pred[a + 1 :], rest, tolerance))
    return best


def test_matching_is_maximum_and_one_to_one_against_brute_force():
    rng = random.Random(0)
    for _ in range(600):
        pred = [rng.randrange(16) for _ in range(rng.randint(1, 6))]  # repeats allowed, in any order
        truth = [rng.randrange(16) for _ in range(rng.randint(1, 6))]
        tolerance = rng.randint(0, 3)
        pairs = match_shots(pred, truth, tolerance)
        assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(pairs)
        assert all(abs(pred[a] - truth[b]) <= tolerance for a, b in pairs)
        assert len(pairs) == brute_force_matching_size(pred, truth, tolerance), (pred, truth, tolerance)
        s = score_trailer(pred, truth, tolerance)
        assert (s.precision, s.recall) == (len(pairs) / len(pred), len(pairs) / len(truth))


def test_tolerance_zero_scores_are_unchanged_for_distinct_shots():
    rng = random.Random(1)
    for _ in range(300):
        pred, truth = rng.sample(range(40), rng.randint(1, 12)), rng.sample(range(40), rng.randint(1, 12))
        s = score_trailer(pred, truth)
        hits = set(pred) & set(truth)
        assert (s.precision, s.recall) == (len(hits) / len(pred), len(hits) / len(truth))
        slots = [truth.index(p) for p in pred if p in hits]  # the old definition of AA at tolerance 0
        pairs = list(itertools.combinations(slots, 2))
        assert s.aa == (sum(a < b for a, b in pairs) / len(pairs) if pairs else None)


# --- 7. topk never pays for a round that locks nothing --------------------------------------------


class CountingBackend(TorchBackend):
    def __init__(self, model):
        super().__init__(model)
        self.masks = []  # the open slots of every encoder pass

    def step(self, state, slots, slot_masked, slot_valid):
        self.masks.append(slot_masked.clone())
        return super().step(state, slots, slot_masked, slot_valid)


def topk_pass_every_round(backend, movie, valid, lengths, steps, temperature):
    """The plain definition: an encoder pass every round, whether or not its count locks anything."""
    B, I, _ = movie.shape
    J = int(lengths.max())
    slot_valid = torch.arange(J)[None, :] < lengths[:, None]
    state = DecodeState(
        shots=torch.zeros(B, J, dtype=torch.int64),
        confidence=torch.zeros(B, J),
        locked=~slot_valid,
        used=torch.zeros(B, I, dtype=torch.bool),
    )
    unit = F.normalize(movie, dim=-1)
    for r in range(1, steps + 1):
        pred = backend.encode(movie, valid, slot_inputs(movie, state.shots), ~state.locked, slot_valid)
        need = cosine_schedule(r, steps, lengths) - (state.locked & slot_valid).sum(dim=1)
        lock_most_confident(state, lambda used: score_slots(pred, unit, valid, used, temperature), need, I)
    return torch.where(slot_valid, state.shots, -1), torch.where(slot_valid, state.confidence, 0.0)


def locking_rounds(length, steps):
    counts = [int(cosine_schedule(r, steps, torch.tensor([length]))) for r in range(steps + 1)]
    return [r for r in range(1, steps + 1) if counts[r] > counts[r - 1]]


def decode_topk(lengths, steps, sizes, seed=5):
    backend = CountingBackend(tiny_encoder())
    movie, valid = pad_batch(movies(sizes, seed=seed))
    with torch.inference_mode():
        want = topk_pass_every_round(backend, movie, valid, torch.tensor(lengths), steps, CFG.temperature)
    backend.masks.clear()
    config = DecodeConfig(mode="topk", steps=steps)
    got = generate(backend, movie, valid, torch.tensor(lengths), config, CFG.temperature)
    return backend, got, want


def test_topk_with_more_rounds_than_slots_runs_only_the_rounds_that_lock():
    assert locking_rounds(3, 12) == [1, 7, 10]
    backend, got, want = decode_topk([3], 12, [20])
    assert len(backend.masks) == 3 and got.rounds.tolist() == [3]  # was 12
    assert [int(m.sum()) for m in backend.masks] == [3, 2, 1]  # each pass locks one more slot
    assert torch.equal(got.shots, want[0])  # cached movie states (prefix) against a full pass every round
    assert_close(got.confidence, want[1], atol=1e-5, rtol=1e-4)
    assert len(set(got.shots[0].tolist())) == 3 and (got.shots >= 0).all()

    engine = Engine(CFG, TorchBackend(tiny_encoder()))
    trailer = engine.generate(movies([20], seed=5)[0], 3, DecodeConfig(mode="topk", steps=12))
    assert trailer.steps == 3 and trailer.shots == got.shots[0].tolist()


def test_topk_batch_counts_each_movies_own_passes():
    lengths, steps = [3, 5, 2], 12
    backend, got, want = decode_topk(lengths, steps, [20, 31, 9])
    union = sorted(set().union(*(locking_rounds(n, steps) for n in lengths)))
    assert len(backend.masks) == len(union) < steps
    assert got.rounds.tolist() == [len(locking_rounds(n, steps)) for n in lengths]
    assert torch.equal(got.shots, want[0])  # cached movie states (prefix) against a full pass every round
    assert_close(got.confidence, want[1], atol=1e-5, rtol=1e-4)
    engine = Engine(CFG, TorchBackend(tiny_encoder()))
    feats = movies([20, 31, 9], seed=5)
    batched = engine.generate_batch(feats, lengths, DecodeConfig(mode="topk", steps=steps))
    for trailer, f, n in zip(batched, feats, lengths):
        alone = engine.generate(f, n, DecodeConfig(mode="topk", steps=steps))
        assert (trailer.shots, trailer.steps) == (alone.shots, alone.steps)
        assert len(set(trailer.shots)) == n


def test_topk_with_many_slots_still_runs_every_round_with_the_same_result():
    lengths, steps = [40, 33], 12
    assert all(locking_rounds(n, steps) == list(range(1, steps + 1)) for n in lengths)
    backend, got, want = decode_topk(lengths, steps, [60, 45])
    assert len(backend.masks) == steps and got.rounds.tolist() == [steps, steps]
    assert torch.equal(got.shots, want[0])  # cached movie states (prefix) against a full pass every round
    assert_close(got.confidence, want[1], atol=1e-5, rtol=1e-4)
