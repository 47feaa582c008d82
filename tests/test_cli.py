"""`ssmp-infer` as a user runs it: real subprocesses, real files, the bundled model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssmp_infer import DecodeConfig, Engine
from ssmp_infer.checkpoint import save_checkpoint
from ssmp_infer.config import ModelConfig
from ssmp_infer.data import default_trailer_length
from ssmp_infer.model import SSMPEncoder

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "movie.npy"
RUN_KEYS = {"shots", "confidence", "num_movie_shots", "length", "steps", "mode", "backend", "device", "model", "elapsed_ms",
            "seed", "pinned"}
EVAL_KEYS = {"precision", "recall", "f1", "ld", "aa", "aa_movies", "movies", "method"}


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "ssmp_infer.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_clean_failure(result: subprocess.CompletedProcess, *words: str) -> None:
    """Non-zero exit, exactly one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = SSMPEncoder(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    return save_checkpoint(model, tmp_path_factory.mktemp("tiny_model"), {"note": "untrained, for CLI tests"})


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synth"
    ok(cli("synth", "--out", root, "--movies", 6, "--seed", 3, "--min-shots", 40, "--max-shots", 60))
    return root


@pytest.fixture(scope="module")
def movie(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("movie") / "movie.npy"
    np.save(path, np.random.default_rng(0).standard_normal((50, 1024)).astype(np.float32))
    return path


# --- run -----------------------------------------------------------------------------------------


def test_run_bundled_model_on_the_example():
    trailer = json.loads(ok(cli("run", EXAMPLE)))
    assert set(trailer) == RUN_KEYS
    num_shots = np.load(EXAMPLE).shape[0]
    assert trailer["num_movie_shots"] == num_shots
    assert trailer["length"] == default_trailer_length(num_shots) == len(trailer["shots"]) == len(trailer["confidence"])
    assert len(set(trailer["shots"])) == trailer["length"]
    assert all(0 <= s < num_shots for s in trailer["shots"])
    assert all(0 < c <= 1 for c in trailer["confidence"])
    assert 1 <= trailer["steps"] <= DecodeConfig().max_rounds
    assert (trailer["mode"], trailer["backend"], trailer["device"], trailer["model"]) == (
        "paper", "torch", "cpu", "bundled:default"
    )
    # the CLI and the Python API give the same trailer
    api = Engine.load(device="cpu").generate(np.load(EXAMPLE))
    assert api.shots == trailer["shots"]
    assert api.confidence == pytest.approx(trailer["confidence"])


def test_bundled_model_beats_random_on_fresh_synthetic_movies(tmp_path):
    """The shipped weights are trained: on movies it never saw, it picks the rule's shots above chance
    and orders them far better than chance (measured: F1 0.235 paper / 0.247 topk against random's
    0.047, AA 0.77 / 0.76 against ~0.5)."""
    root = tmp_path / "fresh"
    # fresh movies (--seed) of the world the bundled model was trained in (--world-seed), near CMTD's size
    ok(cli("synth", "--out", root, "--movies", 12, "--seed", 12345, "--world-seed", 0, "--test-fraction", 0.5,
           "--shots", "1200-1600"))
    rand = [json.loads(ok(cli("eval", "--data", root, "--method", "random", "--seed", s)).splitlines()[-1])
            for s in range(3)]
    chance_f1 = np.mean([r["f1"] for r in rand])
    for mode in ("paper", "topk"):
        ssmp = json.loads(ok(cli("eval", "--data", root, "--mode", mode)).splitlines()[-1])
        assert set(ssmp) >= EVAL_KEYS and ssmp["movies"] == 6
        assert ssmp["f1"] > 3 * chance_f1, (mode, ssmp, chance_f1)
        assert ssmp["aa"] > 0.7, (mode, ssmp)


def test_run_topk_with_length_and_steps(tiny_model, movie):
    trailer = json.loads(ok(cli("run", movie, "--model", tiny_model, "--mode", "topk", "--steps", 4, "--length", 7)))
    assert (trailer["mode"], trailer["steps"], trailer["length"]) == ("topk", 4, 7)
    assert len(set(trailer["shots"])) == 7
    assert trailer["model"] == str(tiny_model)


def test_run_is_deterministic_for_a_seed(tiny_model, movie):
    args = ("run", movie, "--model", tiny_model, "--length", 12, "--seed", 5)
    first, second = json.loads(ok(cli(*args))), json.loads(ok(cli(*args)))
    assert first["shots"] == second["shots"] and first["confidence"] == second["confidence"]


def test_run_csv_matches_json(tiny_model, movie):
    args = ("run", movie, "--model", tiny_model, "--length", 6)
    as_json = json.loads(ok(cli(*args)))
    rows = ok(cli(*args, "--format", "csv")).strip().splitlines()
    assert rows[0] == "slot,shot,confidence"
    parsed = [row.split(",") for row in rows[1:]]
    assert [int(r[0]) for r in parsed] == list(range(6))
    assert [int(r[1]) for r in parsed] == as_json["shots"]
    assert [float(r[2]) for r in parsed] == pytest.approx(as_json["confidence"], abs=1e-6)


def test_run_out_is_atomic_and_never_clobbered(tiny_model, movie, tmp_path):
    out = tmp_path / "trailer.json"
    base = ("run", movie, "--model", tiny_model, "--length", 5, "--out", out)
    assert ok(cli(*base)) == ""
    first = out.read_text()
    assert json.loads(first)["length"] == 5
    (tmp_path / "plain").write_text("")  # an atomic write keeps the permissions a plain open() gives
    assert out.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    (tmp_path / "plain").unlink()

    out.write_text("the user's own notes")
    assert_clean_failure(cli(*base), "exists", "--force")
    assert out.read_text() == "the user's own notes"

    ok(cli(*base, "--force", "--length", 4))
    assert json.loads(out.read_text())["length"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trailer.json"]  # no temp files left behind


# --- bad input: one sentence, non-zero exit, no traceback ----------------------------------------


def _bad_arrays() -> dict:
    rng = np.random.default_rng(1)
    good = rng.standard_normal((30, 1024)).astype(np.float32)
    nan, inf, zero_row = good.copy(), good.copy(), good.copy()
    nan[4, 7] = np.nan
    inf[2, 0] = np.inf
    zero_row[9] = 0
    return {
        "nan": (nan, "NaN"),
        "inf": (inf, "Inf"),
        "three_d": (good.reshape(3, 10, 1024), "2-D"),
        "one_d": (good[0], "2-D"),
        "wrong_dim": (good[:, :512], "1024"),
        "zero_shots": (np.zeros((0, 1024), np.float32), "zero shots"),
        "zero_row": (zero_row, "all zeros"),
        "integers": (np.ones((30, 1024), np.int64), "dtype"),
    }


@pytest.mark.parametrize("case", sorted(_bad_arrays()))
def test_run_rejects_bad_arrays(case, tiny_model, tmp_path):
    array, word = _bad_arrays()[case]
    path = tmp_path / f"{case}.npy"
    np.save(path, array)
    assert_clean_failure(cli("run", path, "--model", tiny_model), word)


def test_run_rejects_bad_files(tiny_model, tmp_path):
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"shot": 1}, None], dtype=object), allow_pickle=True)
    assert_clean_failure(cli("run", pickled, "--model", tiny_model), "pickled")

    text = tmp_path / "features.txt"
    np.savetxt(text, np.ones((3, 1024)))
    assert_clean_failure(cli("run", text, "--model", tiny_model), "not a .npy")

    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(os.urandom(256))
    assert_clean_failure(cli("run", garbage, "--model", tiny_model), "npy")

    truncated = tmp_path / "truncated.npy"
    np.save(truncated, np.ones((30, 1024), np.float32))
    truncated.write_bytes(truncated.read_bytes()[:500])
    assert_clean_failure(cli("run", truncated, "--model", tiny_model), "npy")

    assert_clean_failure(cli("run", tmp_path / "missing.npy", "--model", tiny_model), "no such file")


@pytest.mark.parametrize(
    "args, word",
    [
        (("--length", 0), "positive"),
        (("--length", -3), "positive"),
        (("--length", 51), "larger"),
        (("--mode", "beam"), "invalid choice"),
        (("--steps", 0), "at least 1"),
        (("--length", "ten"), "invalid int"),
        (("--device", "tpu"), "device"),
    ],
)
def test_run_rejects_bad_options(args, word, tiny_model, movie):
    assert_clean_failure(cli("run", movie, "--model", tiny_model, *args), word)


def test_run_rejects_bad_model_dirs(movie, tmp_path):
    assert_clean_failure(cli("run", movie, "--model", tmp_path / "nowhere"), "no model")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"\0" * 64)
    assert_clean_failure(cli("run", movie, "--model", broken), "json")


def test_run_refuses_out_in_a_missing_directory(tiny_model, movie, tmp_path):
    assert_clean_failure(cli("run", movie, "--model", tiny_model, "--out", tmp_path / "no" / "t.json"), "does not exist")
    assert_clean_failure(cli("run", movie, "--model", tiny_model, "--out", tmp_path, "--force"), "is a directory")


# --- eval ----------------------------------------------------------------------------------------


def test_eval_model_and_random(tiny_model, tiny_data):
    ssmp = json.loads(ok(cli("eval", "--data", tiny_data, "--model", tiny_model)).splitlines()[-1])
    rand = json.loads(ok(cli("eval", "--data", tiny_data, "--method", "random", "--tolerance", 2)).splitlines()[-1])
    test_movies = len(list((tiny_data / "test" / "movie_shot_embs").glob("*.npy")))
    for summary in (ssmp, rand):
        assert set(summary) >= EVAL_KEYS
        assert summary["movies"] == test_movies
        assert 0 <= summary["precision"] <= 1 and 0 <= summary["recall"] <= 1 and 0 <= summary["f1"] <= 1
        assert summary["ld"] >= 0
    assert ssmp["method"].startswith("ssmp:") and rand["method"] == "random"


def test_eval_rejects_a_root_without_the_layout(tmp_path, tiny_model):
    (tmp_path / "test" / "movie_shot_embs").mkdir(parents=True)
    assert_clean_failure(cli("eval", "--data", tmp_path, "--model", tiny_model), "trailer_shot_embs")
    assert_clean_failure(cli("eval", "--data", tmp_path / "nope", "--method", "random"), "not a directory")
    assert_clean_failure(cli("eval", "--data", tmp_path, "--method", "random", "--tolerance", -1), "tolerance")


# --- train ---------------------------------------------------------------------------------------


def test_train_writes_a_checkpoint_and_never_clobbers_it(tiny_data, tmp_path):
    out = tmp_path / "model"
    summary = json.loads(ok(cli("train", "--data", tiny_data, "--out", out, "--epochs", 2, "--seed", 4)).splitlines()[-1])
    assert summary["steps"] == 10  # 5 training movies, the demo preset takes one per step
    meta = json.loads((out / "config.json").read_text())
    assert meta["feature_dim"] == 1024 and meta["model"]["d_model"] == 192  # the demo preset
    assert meta["training"]["data"] == str(tiny_data) and meta["training"]["seed"] == 4
    assert meta["training"]["steps"] == 10 and set(meta["training"]["final"]) >= {"loss", "accuracy", "mask_ceiling"}
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]

    weights = (out / "model.safetensors").read_bytes()
    assert_clean_failure(cli("train", "--data", tiny_data, "--out", out, "--epochs", 1), "--force")
    assert (out / "model.safetensors").read_bytes() == weights

    # the trained checkpoint drives `run`
    movie = tiny_data / "test" / "movie_shot_embs" / "movie_0005.npy"
    assert json.loads(ok(cli("run", movie, "--model", out, "--length", 3)))["length"] == 3


def test_train_max_minutes_stops_cleanly_and_saves(tiny_data, tmp_path):
    out = tmp_path / "model"
    result = cli("train", "--data", tiny_data, "--out", out, "--epochs", 1000, "--max-minutes", 0.001)
    ok(result)
    assert "max-minutes" in result.stderr
    training = json.loads((out / "config.json").read_text())["training"]
    # 1000 epochs of 5 training movies, one movie per step
    assert training["stopped"] == "budget" and 1 <= training["steps"] < training["max_steps"] == 1000 * 5


def test_train_options_reach_the_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "model"
    args = ("--epochs", 1, "--movie-attention", "prefix", "--mask-schedule", "linear-desc", "--device", "cpu",
            "--context-hidden", 24, "--context-novelty", "--context-dropout", 0.1, "--context-profile", 3)
    ok(cli("train", "--data", tiny_data, "--out", out, *args))
    meta = json.loads((out / "config.json").read_text())
    assert meta["model"]["movie_attention"] == "prefix"
    model = meta["model"]
    assert (model["context_hidden"], model["context_novelty"], model["context_dropout"], model["context_profile"]) \
        == (24, True, 0.1, 3)
    assert meta["training"]["config"]["mask_schedule"] == "linear-desc" and meta["training"]["device"] == "cpu"
    movie = tiny_data / "test" / "movie_shot_embs" / "movie_0005.npy"
    assert json.loads(ok(cli("run", movie, "--model", out, "--length", 3)))["length"] == 3
    for bad, word in (("--mask-schedule", "uniformly"), ("--movie-attention", "causal"), ("--device", "tpu"),
                      ("--context-dropout", "1.5"), ("--context-profile", "1"), ("--context-profile", "17")):
        assert_clean_failure(cli("train", "--data", tiny_data, "--out", tmp_path / "m2", bad, word), word)
    assert not (tmp_path / "m2").exists()


def test_train_can_switch_the_context_branch_or_the_shot_prior_off(tiny_data, tmp_path):
    """The presets refine the branch (local read, novelty, dropout); --no-context-prior and --no-shot-prior
    must still train, without the branch, and asking for a refinement of a branch that is off is refused."""
    movie = tiny_data / "test" / "movie_shot_embs" / "movie_0005.npy"
    for flag, shot_prior in (("--no-context-prior", True), ("--no-shot-prior", False)):
        out = tmp_path / flag
        ok(cli("train", "--data", tiny_data, "--out", out, "--epochs", 1, flag))
        model = json.loads((out / "config.json").read_text())["model"]
        assert (model["shot_prior"], model["context_prior"], model["local_context"], model["context_novelty"]) \
            == (shot_prior, False, False, False)
        assert json.loads(ok(cli("run", movie, "--model", out, "--length", 3)))["length"] == 3
    for refinement, word in (("--context-novelty", "context_novelty"), ("--context-profile=4", "context_profile")):
        bad = cli("train", "--data", tiny_data, "--out", tmp_path / "m", "--epochs", 1, "--no-context-prior", refinement)
        assert_clean_failure(bad, word)
        assert not (tmp_path / "m").exists()


def test_train_rejects_bad_input(tmp_path):
    assert_clean_failure(cli("train", "--data", tmp_path, "--out", tmp_path / "m"), "train/movie_shot_embs")
    assert_clean_failure(cli("train", "--data", tmp_path, "--out", tmp_path / "m", "--epochs", 0), "epochs")
    assert not (tmp_path / "m").exists()


# --- synth ---------------------------------------------------------------------------------------


def test_synth_is_deterministic_and_never_clobbers(tiny_data, tmp_path):
    again = tmp_path / "again"
    summary = json.loads(ok(cli("synth", "--out", again, "--movies", 6, "--seed", 3, "--min-shots", 40, "--max-shots", 60)))
    assert (summary["train"], summary["test"]) == (5, 1)
    files = sorted(p.relative_to(tiny_data) for p in tiny_data.rglob("*.npy"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.npy"))
    assert len(files) == 12
    for rel in files:
        assert (tiny_data / rel).read_bytes() == (again / rel).read_bytes(), rel

    (again / "notes.txt").write_text("mine")
    assert_clean_failure(cli("synth", "--out", again, "--movies", 4), "--force")
    assert len(list(again.rglob("*.npy"))) == 12
    ok(cli("synth", "--out", again, "--movies", 4, "--force", "--min-shots", 40, "--max-shots", 60))
    assert len(list(again.rglob("*.npy"))) == 8
    assert (again / "notes.txt").read_text() == "mine"  # only synth's own folders were replaced


def test_synth_rejects_bad_options(tmp_path):
    assert_clean_failure(cli("synth", "--out", tmp_path / "d", "--movies", 1), "movies")
    assert_clean_failure(cli("synth", "--out", tmp_path / "d", "--min-shots", 500, "--max-shots", 100), "min-shots")


def test_an_interrupt_wrapped_by_an_import_is_still_one_line(monkeypatch, capsys):
    """Ctrl-C while torch defines a class during its import reaches us as a RuntimeError whose cause is
    the KeyboardInterrupt (Python wraps errors raised in __set_name__): exit 130, one line."""
    from ssmp_infer import cli

    def interrupted_import(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise RuntimeError("Error calling __set_name__ on 'SymNumberMemoDescriptor'") from e

    monkeypatch.setattr(cli, "cmd_synth", interrupted_import)
    assert cli.main(["synth", "--out", "unused"]) == 130
    assert capsys.readouterr().err == "ssmp-infer: interrupted\n"

    def plain_bug(args):
        raise RuntimeError("a bug, not an interrupt")

    monkeypatch.setattr(cli, "cmd_synth", plain_bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["synth", "--out", "unused"])


def test_a_mistyped_option_is_one_line_with_its_likely_meaning(movie):
    result = cli("run", movie, "--lenght", "5")
    assert_clean_failure(result, "unrecognized arguments: --lenght 5", "did you mean --length?")
    assert result.stderr.count("ssmp-infer") == 1, result.stderr  # one prefix, not the program's name twice
    result = cli("run", movie, "--lenght", "5", "--sedd", "3")
    assert_clean_failure(result, "--length for --lenght", "--seed for --sedd")
    assert_clean_failure(cli("run", movie, "--mode", "fast"), "run: argument --mode: invalid choice: 'fast'")
    assert "did you mean" not in cli("run", movie, "--zzzzzz").stderr  # nothing close: no guess


def test_version_and_help_show_what_a_newcomer_needs():
    from ssmp_infer import __version__

    assert ok(cli("--version")).strip() == f"ssmp-infer {__version__}"
    synth = " ".join(ok(cli("synth", "--help")).split())  # argparse wraps lines; read the words
    assert "--movies MOVIES default: 200" in synth and "--test-fraction TEST_FRACTION default: 0.2" in synth
    run = " ".join(ok(cli("run", "--help")).split())
    assert "--seed SEED in [0, 2^63) (default: 0)" in run
    assert "--force" in run and "(default: False)" not in run  # a flag's default says nothing


def test_both_bundled_models_have_names(tmp_path):
    features = tmp_path / "movie1280.npy"
    np.save(features, np.random.default_rng(0).standard_normal((90, 1280)).astype(np.float32))
    got = json.loads(ok(cli("run", features, "--length", "4", "--model", "bundled:1280")))
    assert got["model"] == "bundled:1280" and len(got["shots"]) == 4
    assert json.loads(ok(cli("run", EXAMPLE, "--length", "3", "--model", "bundled:default")))["model"] == "bundled:default"
    assert_clean_failure(cli("run", EXAMPLE, "--model", "bundled:nope"), "no bundled model is called", "bundled:1280")
    # a 1024-d movie on the 1280-d model: the usual sentence, naming the model by its name
    assert_clean_failure(cli("run", EXAMPLE, "--model", "bundled:1280"), "1280")


def test_editor_controls_come_from_the_package():
    import ssmp_infer
    from ssmp_infer.controls import EditorControls

    assert ssmp_infer.EditorControls is EditorControls and "EditorControls" in ssmp_infer.__all__


def test_run_copies_a_movie_at_most_once_on_its_way_to_the_encoder(tmp_path, monkeypatch, capsys):
    """Checked once, at the boundary: from the file to the encoder's `prepare`, the features are read once
    and copied at most once (the float32 check and scaling); the engine does not check them again, and one
    movie is not copied into a padded batch. Measured in-process: numpy's peak (tracemalloc) before
    `prepare`, and every torch op before it that makes a tensor of the movie's size (a dispatch mode)."""
    import tracemalloc

    from torch.utils._python_dispatch import TorchDispatchMode

    from ssmp_infer import cli
    from ssmp_infer.backends import TorchBackend

    path = tmp_path / "movie.npy"
    features = np.random.default_rng(0).standard_normal((2000, 1024)).astype(np.float32)
    np.save(path, features)
    size = features.nbytes
    made, seen = [], {}

    class MovieSizedTensors(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.nbytes >= size and not func.is_view:
                made.append(str(func))
            return out

    prepare = TorchBackend.prepare

    def measured_prepare(self, movie, *args, **kwargs):
        seen["peak"], seen["torch"] = tracemalloc.get_traced_memory()[1], list(made)
        return prepare(self, movie, *args, **kwargs)

    monkeypatch.setattr(TorchBackend, "prepare", measured_prepare)
    Engine.load(device="cpu")  # the model's own memory is not the movie's: load it once before measuring
    tracemalloc.start()
    try:
        with MovieSizedTensors():
            assert cli.main(["run", str(path), "--length", "5", "--device", "cpu"]) == 0
    finally:
        tracemalloc.stop()
    assert len(json.loads(capsys.readouterr().out)["shots"]) == 5
    assert seen["peak"] < 2.1 * size, f"numpy held {seen['peak'] / size:.2f} movies at once before the encoder"
    assert not seen["torch"], f"torch copied the movie before the encoder: {seen['torch']}"


@pytest.mark.parametrize("refresh_every", [None, 1])
def test_the_torch_backend_normalises_a_movie_once(monkeypatch, refresh_every):
    """The backend's state holds the unit movie; neither the movie pass (`prepare`, or a full pass every
    round with refresh_every 1) nor the position keys normalise it again. Counted: calls of
    F.normalize on a tensor of the movie's shape, through `prepare` and two rounds."""
    import torch.nn.functional as F

    from ssmp_infer.backends import TorchBackend

    torch.manual_seed(0)
    model = SSMPEncoder(ModelConfig(feature_dim=32, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                                    shot_prior=True, context_prior=True, position_keys=True)).eval()
    for p in model.key_position.parameters():  # W_k starts at zero, where the keys are the unit movie
        torch.nn.init.normal_(p)
    backend = TorchBackend(model, torch.device("cpu"))
    movie, valid = torch.randn(1, 40, 32), torch.ones(1, 40, dtype=torch.bool)
    normalise, movie_sized = F.normalize, []
    unit = normalise(movie, dim=-1)

    def counted(x, *args, **kwargs):
        out = normalise(x, *args, **kwargs)
        if out.shape == unit.shape and torch.allclose(out, unit, atol=1e-6):
            movie_sized.append(tuple(x.shape))
        return out

    monkeypatch.setattr(F, "normalize", counted)
    state = backend.prepare(movie, valid, refresh_every)
    slots = torch.randn(1, 5, 32)
    masked, slot_valid = torch.ones(1, 5, dtype=torch.bool), torch.ones(1, 5, dtype=torch.bool)
    for _ in range(2):
        backend.step(state, slots, masked, slot_valid)
    assert len(movie_sized) == 1, f"the movie was normalised {len(movie_sized)} times"
