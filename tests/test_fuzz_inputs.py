"""Hostile input (issue 18): no crash, no hang, nothing of the user's destroyed.

Two halves:
- property tests (hypothesis, in process) over .npy headers, dtypes, shapes and values, over
  config.json contents and over safetensors headers: every input gives a valid result or an InputError,
  never another exception, and a .npy body never makes the checks allocate more than a small multiple
  of its own size, whatever its header claims (measured with tracemalloc, which numpy reports to);
- subprocess cases through the real CLI for the kinds of file and moment a property test cannot
  make: FIFOs, symbolic links, device nodes, unwritable folders, Ctrl-C at several moments, closed
  pipes. Each case runs in its own folder, snapshotted before and after: it fails on a traceback, a
  time-out, a refusal that is not one or two lines, or a change to any file the case did not own.
  The cases run in parallel threads (they are subprocesses), once per session.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ssmp_infer.checkpoint import load_checkpoint, save_checkpoint
from ssmp_infer.config import ModelConfig
from ssmp_infer.errors import InputError
from ssmp_infer.inputs import (
    check_weights_match,
    features_from_npy_bytes,
    json_depth,
    load_features,
    parse_json,
    validate_features,
)
from ssmp_infer.model import SSMPEncoder

D = 8
CFG = ModelConfig(feature_dim=D, d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.0)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def npy_bytes(header: str, body: bytes = b"", version=(1, 0)) -> bytes:
    """A .npy file with any header text, padded as numpy pads it."""
    h = header.encode("utf8" if version == (3, 0) else "latin1", errors="replace")
    prefix = 10 if version == (1, 0) else 12
    h += b" " * ((64 - (prefix + len(h) + 1) % 64) % 64) + b"\n"
    size = struct.pack("<H" if version == (1, 0) else "<I", len(h)) if version in ((1, 0), (2, 0), (3, 0)) else b"\0\0"
    return b"\x93NUMPY" + bytes(version) + size + h + body


def saved(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def checked(data: bytes, feature_dim=None):
    """features_from_npy_bytes, with its peak allocation measured; InputError is a valid outcome."""
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a RuntimeWarning (overflow, invalid value) is a defect too
            out = features_from_npy_bytes(data, "body", feature_dim)
    except InputError as e:
        out = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # reading and validating: a float16 body costs at most ~11x its size (two float64 copies, |x|, float32)
    assert peak <= 16 * len(data) + (1 << 20), f"{peak} bytes allocated for a {len(data)}-byte body"
    return out


# --- .npy headers ---------------------------------------------------------------------------------

SIZES = st.one_of(st.integers(0, 40), st.integers(-5, -1), st.integers(10**6, 10**20), st.just(2**63), st.just(2**64 + 1))
DESCRS = st.sampled_from(["<f4", "<f2", "<f8", ">f4", "<i4", "|u1", "|b1", "<c8", "|O", "O", "<U4", "|S3", "V8",
                          "zz", "<f16", "", "f4", "float32", "<M8[s]"])


@st.composite
def npy_headers(draw):
    shape = tuple(draw(st.lists(SIZES, max_size=4)))
    fields = {"descr": draw(st.one_of(DESCRS, st.just([("a", "<f4")]), st.integers())),
              "fortran_order": draw(st.one_of(st.booleans(), st.integers(0, 2), st.none())),
              "shape": draw(st.one_of(st.just(shape), st.just(list(shape)), st.floats(allow_nan=True), st.text(max_size=5)))}
    if draw(st.booleans()):
        fields = {k: v for k, v in fields.items() if draw(st.booleans())}
    text = repr(fields)
    mangle = draw(st.sampled_from(["none", "cut", "garbage", "nested"]))
    if mangle == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif mangle == "garbage":
        text = draw(st.text(max_size=60))
    elif mangle == "nested":
        text = text.replace("'shape': ", "'shape': " + "(" * 300, 1)
    version = draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (0, 0), (9, 9)]))
    body = draw(st.binary(max_size=512))
    return npy_bytes(text, body, version)


@FUZZ
@given(npy_headers())
def test_any_npy_header_is_a_result_or_one_input_error(data):
    out = checked(data)
    if not isinstance(out, InputError):
        assert out.dtype == np.float32 and out.ndim == 2 and np.isfinite(out).all()


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 2000))
def test_damaged_npy_files_never_raise_anything_but_input_error(junk, cut):
    good = saved(np.random.default_rng(0).standard_normal((20, D)).astype(np.float32))
    for data in (good[:cut], good[:cut] + junk + good[cut:], b"\x93NUMPY" + junk, junk):
        out = checked(data)
        assert isinstance(out, InputError) or out.shape[1] == D


@FUZZ
@given(st.integers(0, 2**70), st.integers(1, 4096))
def test_a_shape_claim_larger_than_the_body_is_refused_before_allocation(rows, cols):
    body = np.ones((3, 4), np.float32).tobytes()
    data = npy_bytes(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}", body)
    out = checked(data)  # checked() bounds the allocation, whatever the claim
    if rows * cols * 4 > len(body):
        assert isinstance(out, InputError) and "bytes" in str(out)


FLOATS = st.sampled_from([np.float16, np.float32, np.float64, ">f4", ">f8"])


@FUZZ
@given(hnp.arrays(FLOATS, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=9),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=16)), st.booleans())
def test_npy_bytes_and_npy_files_agree_with_the_array_checks(array, fortran):
    array = np.asfortranarray(array) if fortran else array
    data = saved(array)
    from_bytes = checked(data)
    try:
        want = validate_features(array, "body")
    except InputError as e:
        want = e
    if isinstance(want, InputError):
        assert isinstance(from_bytes, InputError) and str(from_bytes) == str(want)
    else:
        np.testing.assert_array_equal(from_bytes, want)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.npy"
        path.write_bytes(data)
        try:
            from_file = load_features(path)
        except InputError as e:
            assert isinstance(want, InputError), e
        else:
            np.testing.assert_array_equal(from_file, want)


@FUZZ
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                  elements=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                     st.sampled_from([1e300, -1e300, 1e-310, 3e38, 1e39, 0.0]))))
def test_values_of_any_scale_are_valid_or_named_and_never_warn(array):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            out = validate_features(array, "movie")
        except InputError as e:
            message = str(e)
            if not np.isfinite(array).all():
                assert "NaN or Inf" in message
            else:  # finite values beyond float32's range are not called NaN or Inf
                assert "all zeros" in message and (array == 0).all(axis=1).any()
            return
    assert np.isfinite(array).all() and not (array == 0).all(axis=1).any()
    assert out.dtype == np.float32 and np.isfinite(out).all()
    # the same directions: rows are scaled by a power of two, never flattened to zero
    unit = array / np.abs(array).max(axis=1, keepdims=True)
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    got = out / np.linalg.norm(out.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(got, unit, atol=1e-6)


# --- config.json and safetensors headers ----------------------------------------------------------

JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, 1, 2, 16, 2**20, 10**7]),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(SSMPEncoder(CFG).eval(), tmp_path_factory.mktemp("ckpt"), {"note": "fuzz"})


@st.composite
def configs(draw):
    meta = {"format": "ssmp-infer/1", "model": CFG.to_dict(), "feature_dim": D, "training": {}}
    for field in draw(st.lists(st.sampled_from(sorted(CFG.to_dict())), max_size=3, unique=True)):
        meta["model"][field] = draw(JSON_VALUES)
    if draw(st.booleans()):
        meta["model"][draw(st.text(max_size=6))] = draw(JSON_VALUES)
    top = draw(st.sampled_from(["keep", "model", "format", "whole"]))
    if top == "model":
        meta["model"] = draw(JSON_VALUES)
    elif top == "format":
        meta["format"] = draw(JSON_VALUES)
    elif top == "whole":
        meta = draw(JSON_VALUES)
    text = json.dumps(meta, allow_nan=True)
    depth = draw(st.sampled_from([0, 0, 0, 70, 5000, 100_000]))
    if depth:
        text = text.replace('"training": {}', '"training": ' + "[" * depth + "]" * depth) if top == "keep" else "[" * depth + "]" * depth
    if draw(st.booleans()) and top == "keep":
        text = text.replace('"dropout": 0.0', '"dropout": ' + draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "7" * 5000])))
    return text


@FUZZ
@given(configs())
def test_any_config_json_loads_or_is_one_input_error(tiny_checkpoint, text):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "m"
        shutil.copytree(tiny_checkpoint, directory)
        (directory / "config.json").write_text(text)
        try:
            model, meta = load_checkpoint(directory)
        except InputError as e:
            assert "\n" not in str(e)
            return
    # accepted: then it is the model the weights are (any other shape is refused by the header check)
    shape_fields = ("feature_dim", "d_model", "n_layers", "n_heads", "d_ff")
    assert all(getattr(model.cfg, f) == getattr(CFG, f) for f in shape_fields)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_config_shapes_are_checked_against_the_weights_before_the_model_is_built(tiny_checkpoint, tmp_path, monkeypatch):
    """A config within every bound but 10^5 times the weights is refused from the header alone."""
    directory = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, directory)
    meta = json.loads((directory / "config.json").read_text())
    meta["model"].update(d_model=16384, n_layers=256, n_heads=1024, d_ff=65536)
    (directory / "config.json").write_text(json.dumps(meta))
    built, init = [], SSMPEncoder.__init__

    def recording_init(self, cfg):
        built.append(torch.empty(0).device)  # where this model's tensors go
        init(self, cfg)

    monkeypatch.setattr(SSMPEncoder, "__init__", recording_init)
    with pytest.raises(InputError, match="does not match .*config.json"):
        load_checkpoint(directory)
    assert built == [torch.device("meta")]  # only the shape probe, which allocates nothing


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_at_load(tiny_checkpoint, tmp_path, value):
    from safetensors.torch import load_file, save_file

    directory = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, directory)
    state = load_file(str(directory / "model.safetensors"))
    name = sorted(state)[len(state) // 2]
    state[name].view(-1)[3] = value
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(InputError, match=f"NaN or Inf .*{name}"):
        load_checkpoint(directory)


@FUZZ
@given(st.binary(max_size=64), JSON_VALUES, st.integers(0, 2**64 - 1))
def test_any_safetensors_header_is_checked_or_one_input_error(tiny_checkpoint, junk, header, claimed):
    good = (tiny_checkpoint / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    body = good[8 + n :]
    text = json.dumps(header).encode()
    expected = {k: tuple(v.shape) for k, v in SSMPEncoder(CFG).state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        for data in (struct.pack("<Q", len(text)) + text + body, struct.pack("<Q", claimed) + junk, junk,
                     good[: len(junk) * 97 % len(good)]):
            path.write_bytes(data)
            with pytest.raises(InputError):
                check_weights_match(path, expected, "config.json")
        path.write_bytes(good)
        check_weights_match(path, expected, "config.json")


@FUZZ
@given(JSON_VALUES, st.integers(0, 200))
def test_json_depth_is_counted_without_parsing(value, extra):
    text = "[" * extra + json.dumps(value) + "]" * extra

    def depth(v):
        return 1 + max(map(depth, v.values() if isinstance(v, dict) else v), default=0) if isinstance(v, (list, dict)) else 0

    assert json_depth(text) == extra + depth(value)
    if json_depth(text) > 64:
        with pytest.raises(InputError, match="deep"):
            parse_json(text, "x")
    else:
        assert parse_json(text, "x") == json.loads(text)


# --- the real CLI in subprocesses -----------------------------------------------------------------

# What the console script runs. A background job of a non-interactive shell (as CI may run pytest) starts
# with Ctrl-C ignored and its children inherit that, where a terminal's command has it: restore it first.
ENTRY = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "from ssmp_infer.entry import main; sys.exit(main())")
TIMEOUT = 120  # a hang is a failure; generous for a loaded 2-core CI machine
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            s = os.lstat(p)
            link = os.readlink(p) if stat.S_ISLNK(s.st_mode) else None
            kind = stat.S_IFMT(s.st_mode)
            # a directory's size and mtime change with what is owned inside it; its existence is what counts
            out[str(p.relative_to(root))] = (kind, link) if kind == stat.S_IFDIR else (kind, s.st_size, s.st_mtime_ns, s.st_ino, link)
    return out


class Case:
    """One CLI run in its own folder: `setup(folder) -> argv`; `owned`: paths (relative) it may change."""

    def __init__(self, setup, expect="fail", owned=(), sigint=None, close_stdout=False, words=(), check=None, skip=None):
        self.setup, self.expect, self.owned, self.sigint = setup, expect, owned, sigint
        self.close_stdout, self.words, self.check, self.skip = close_stdout, words, check, skip


HAS_RAY = importlib.util.find_spec("ray") is not None


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mkfifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _mknod(path: Path):
    """A character device (the null device's numbers) in a temp folder; None where not permitted."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, AttributeError, OSError):
        return None
    return path


def _no_partial_dataset(folder: Path, result) -> bool:
    """After Ctrl-C, synth's folder holds a complete data set or none (no train/ or test/ alone)."""
    out = folder / "out"
    parts = [(out / p).exists() for p in ("train", "test", "ceiling.json", "ssmp-synth.json")]
    return all(parts) or not any(parts)


def _no_checkpoint_half(folder: Path, result) -> bool:
    ck = folder / "ck"
    return (ck / "model.safetensors").exists() == (ck / "config.json").exists()


def cases(fix: Path) -> dict[str, Case]:
    model, movie, data = str(fix / "model"), str(fix / "movie.npy"), str(fix / "data")
    run = ["run", movie, "--model", model]
    train = ["train", "--data", str(fix / "data1024"), "--epochs", "1", "--validation-fraction", "0"]
    synth = ["--movies", "100", "--shots", "300-500"]  # a few seconds of work to interrupt

    many = ["run", movie, movie, "--model", model]

    def record(**fields) -> str:
        """A record as `run` writes it for the fixture movie, with `fields` changed."""
        return json.dumps({"name": "movie", "shots": [0], "confidence": [0.5], "num_movie_shots": 30, "length": 1,
                           "steps": 1, "mode": "paper", "backend": "torch", "device": "cpu", "model": model,
                           "elapsed_ms": 1.0, "seed": 0, "pinned": [], **fields}) + "\n"

    def put(t: Path, text: str) -> None:
        (t / "o.jsonl").write_text(text)

    def user_data(t: Path) -> Path:
        """A folder that looks like a data set but holds the user's own files."""
        for split in ("train", "test"):
            (t / "out" / split / "movie_shot_embs").mkdir(parents=True)
            (t / "out" / split / "notes.txt").write_text("mine")
            np.save(t / "out" / split / "movie_shot_embs" / "real.npy", np.ones((3, D), np.float32))
        return t / "out"

    def copy_data(t: Path) -> Path:
        shutil.copytree(data, t / "data")
        return t / "data"

    def unwritable(t: Path) -> Path:
        (t / "ro").mkdir()
        os.chmod(t / "ro", 0o555)
        return t / "ro" / "ck"

    c = {
        # FIFOs: refused before they are opened (opening one for reading blocks until a writer comes)
        "fifo_npy": Case(lambda t: ["run", _mkfifo(t / "x.npy"), "--model", model], words=("named pipe",)),
        "fifo_npz": Case(lambda t: ["run", _mkfifo(t / "x.npz"), "--model", model], words=("named pipe",)),
        "fifo_in_data_root": Case(lambda t: (copy_data(t), _mkfifo(t / "data/test/movie_shot_embs/m9.npy"),
                                             np.save(t / "data/test/trailer_shot_embs/m9.npy", np.ones((2, D), np.float32)),
                                             ["eval", "--data", t / "data", "--model", model])[-1], words=("named pipe",)),
        "fifo_config": Case(lambda t: (shutil.copytree(model, t / "m"), (t / "m/config.json").unlink(), _mkfifo(t / "m/config.json"),
                                       ["run", movie, "--model", t / "m"])[-1]),
        "fifo_out_force": Case(lambda t: run + ["--out", _mkfifo(t / "o.json"), "--force"], words=("regular",)),
        # symbolic links
        "symlink_loop_input": Case(lambda t: (os.symlink("x.npy", t / "x.npy"), ["run", t / "x.npy", "--model", model])[-1], words=("loop",)),
        "symlink_loop_in_data_root": Case(lambda t: (copy_data(t), os.symlink("m9.npy", t / "data/test/movie_shot_embs/m9.npy"),
                                                     np.save(t / "data/test/trailer_shot_embs/m9.npy", np.ones((2, D), np.float32)),
                                                     ["eval", "--data", t / "data", "--model", model])[-1], words=("loop",)),
        "symlink_out_force": Case(lambda t: ((t / "real.json").write_text("{}"), os.symlink("real.json", t / "link.json"),
                                             run + ["--out", t / "link.json", "--force"])[-1], words=("symbolic link",)),
        "symlink_to_movie": Case(lambda t: (os.symlink(movie, t / "x.npy"), ["run", t / "x.npy", "--model", model])[-1], expect="ok"),
        # device nodes, made in the case's folder
        "device_input": Case(lambda t: ["run", _mknod(t / "dev.npy") or "/dev/null", "--model", model], words=("device",)),
        "device_out_force": Case(lambda t: run + ["--out", _mknod(t / "dev") or pytest.skip("mknod is not permitted here"), "--force"],
                                 words=("device",)),
        "devzero_input": Case(lambda t: ["run", "/dev/zero", "--model", model], words=("device",)),
        # outputs that must not be replaced, or are not files
        "out_trailing_slash": Case(lambda t: run + ["--out", f"{t}/newdir/"], words=("directory",)),
        "out_dash_is_stdout": Case(lambda t: run + ["--out", "-"], expect="ok",
                                   check=lambda t, r: json.loads(r.stdout)["length"] > 0 and not (t / "-").exists()),
        "out_dir_force": Case(lambda t: ((t / "d").mkdir(), run + ["--out", t / "d", "--force"])[-1], words=("directory",)),
        "out_regular_force": Case(lambda t: ((t / "o.json").write_text("old"), run + ["--out", t / "o.json", "--force"])[-1],
                                  expect="ok", owned=("o.json",),
                                  check=lambda t, r: json.loads((t / "o.json").read_text())["length"] > 0),
        # unwritable output folders: refused before training
        "train_unwritable_out": Case(lambda t: train + ["--out", unwritable(t)], words=("cannot write",),
                                     skip="running as root, where permission bits do not stop writes" if IS_ROOT else None),
        "train_out_under_a_file": Case(lambda t: ((t / "f").write_text("x"), train + ["--out", t / "f" / "ck"])[-1]),
        # synth --force: only its own folders, every option checked first
        "synth_force_user_folder_bad_seed": Case(lambda t: (user_data(t), ["synth", "--out", t / "out", "--force", "--seed", "-1", *synth])[-1]),
        "synth_force_user_folder": Case(lambda t: (user_data(t), ["synth", "--out", t / "out", "--force", *synth])[-1], words=("synth",)),
        "synth_too_big_for_disk": Case(lambda t: ["synth", "--out", t / "out", "--movies", "100000", "--shots", "90000-100000"],
                                       words=("disk",)),
        # non-finite training
        "train_lr_nan": Case(lambda t: train + ["--out", t / "ck", "--lr", "nan"], words=("--lr",)),
        "train_ema_decay_one": Case(lambda t: train + ["--out", t / "ck", "--ema-decay", "1"], words=("--ema-decay",)),
        "train_ema_decay_nan": Case(lambda t: train + ["--out", t / "ck", "--ema-decay", "nan"], words=("--ema-decay",)),
        "train_whole_range_share_above_one": Case(lambda t: train + ["--out", t / "ck", "--whole-range-share", "1.5"],
                                                  words=("--whole-range-share",)),
        "train_whole_range_share_nan": Case(lambda t: train + ["--out", t / "ck", "--whole-range-share", "nan"],
                                            words=("--whole-range-share",)),
        "train_feature_noise_nan": Case(lambda t: train + ["--out", t / "ck", "--feature-noise", "nan"],
                                        words=("--feature-noise",)),
        "train_feature_noise_huge": Case(lambda t: train + ["--out", t / "ck", "--feature-noise", "5"],
                                         words=("--feature-noise",)),
        "train_shot_drop_nan": Case(lambda t: train + ["--out", t / "ck", "--shot-drop", "nan"], words=("--shot-drop",)),
        "train_shot_drop_all": Case(lambda t: train + ["--out", t / "ck", "--shot-drop", "1"], words=("--shot-drop",)),
        "train_crop_shots_negative": Case(lambda t: train + ["--out", t / "ck", "--crop-shots", "-1"],
                                          words=("--crop-shots",)),
        "train_patience_negative": Case(lambda t: train + ["--out", t / "ck", "--patience", "-3"], words=("--patience",)),
        "train_lr_huge": Case(lambda t: train + ["--out", t / "ck", "--lr", "1e308", "--epochs", "3"], owned=("ck",),
                              words=("--lr",), check=lambda t, r: not (t / "ck" / "model.safetensors").exists()),
        # --resume: a file that is not this run's is refused and left as it was; a torn last line is made again
        "resume_not_a_run_output": Case(lambda t: (put(t, "slot,shot\n0,1\n"), many + ["--out", t / "o.jsonl", "--resume"])[-1],
                                        words=("json record",)),
        "resume_other_model": Case(lambda t: (put(t, record(model="/elsewhere")), many + ["--out", t / "o.jsonl", "--resume"])[-1],
                                   words=("model",)),
        "resume_other_seed": Case(lambda t: (put(t, record(seed=5)), many + ["--out", t / "o.jsonl", "--resume"])[-1],
                                  words=("seed",)),
        "resume_other_inputs": Case(lambda t: (put(t, record(name="another")), many + ["--out", t / "o.jsonl", "--resume"])[-1],
                                    words=("other inputs",)),
        "resume_binary_junk": Case(lambda t: ((t / "o.jsonl").write_bytes(os.urandom(200) + b"\n"),
                                              many + ["--out", t / "o.jsonl", "--resume"])[-1], words=("json record",)),
        "resume_fifo_out": Case(lambda t: many + ["--out", _mkfifo(t / "o.jsonl"), "--resume"], words=("regular",)),
        "resume_with_force": Case(lambda t: (put(t, record()), many + ["--out", t / "o.jsonl", "--resume", "--force"])[-1],
                                  words=("--force",)),
        "resume_torn_last_line": Case(lambda t: (put(t, record() + '{"name": "mov'), many + ["--out", t / "o.jsonl", "--resume"])[-1],
                                      expect="ok", owned=("o.jsonl",),
                                      check=lambda t, r: [json.loads(x)["name"] for x in (t / "o.jsonl").read_text().splitlines()]
                                      == ["movie", "movie"]),
        # a Ray cluster address that nobody answers: a sentence in seconds, not a wait without end
        "ray_address_not_answering": Case(lambda t: ["run", "--ray", f"127.0.0.1:{closed_port()}", movie, movie, "--model", model],
                                          words=("does not answer",), skip=None if HAS_RAY else "ray is not installed"),
        # closed pipes: the reader went away
        "run_closed_stdout": Case(lambda t: run, expect="any", close_stdout=True),
        "run_many_closed_stdout": Case(lambda t: ["run", movie, movie, movie, "--model", model], expect="any", close_stdout=True),
        "eval_closed_stdout": Case(lambda t: ["eval", "--data", data, "--model", model], expect="any", close_stdout=True),
    }
    # Ctrl-C at moments fixed by what the process has loaded (a fixed delay lands elsewhere on a loaded
    # machine): while numpy loads (the CLI's imports), while torch loads (a command's), during the work
    for lib, delay in (("numpy", 0.0), ("libtorch", 0.0), ("libtorch", 1.5)):
        c[f"sigint_run_{lib}_{delay}"] = Case(lambda t: run + ["--mode", "topk"], expect="interrupt", sigint=(lib, delay))
    for delay in (0.0, 1.0, 3.0):
        c[f"sigint_synth_libtorch_{delay}"] = Case(lambda t: ["synth", "--out", t / "out", *synth], expect="interrupt",
                                                   sigint=("libtorch", delay), owned=("out",), check=_no_partial_dataset)
    c["sigint_train_libtorch_4.0"] = Case(lambda t: train + ["--out", t / "ck", "--epochs", "200"], expect="interrupt",
                                          sigint=("libtorch", 4.0), owned=("ck",), check=_no_checkpoint_half)
    return c


def _wait_for_library(proc: subprocess.Popen, name: str) -> bool:
    """Wait until a shared library whose path contains `name` is mapped into the process (it is being
    imported); False if the process ended first or did not get there within the time-out."""
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{proc.pid}/maps") as f:
                if name in f.read():
                    return True
        except OSError:
            return False
        time.sleep(0.005)
    return False


def _run_case(fix: Path, name: str, case: Case) -> dict:
    folder = fix.parent / "cases" / name
    folder.mkdir(parents=True)
    try:
        argv = [str(a) for a in case.setup(folder)]
    except pytest.skip.Exception as e:
        return {"skip": str(e)}
    before = snapshot(folder)
    # the warnings a user sees: RuntimeWarning spew would count, an interrupted import's ResourceWarning is hidden
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}, "OMP_NUM_THREADS": "1"}
    r, w = os.pipe() if case.close_stdout else (None, None)
    if case.close_stdout:
        os.close(r)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-c", ENTRY, *argv], stdin=subprocess.DEVNULL,
                                stdout=w if case.close_stdout else out, stderr=err, cwd=folder, env=env)
        if w is not None:
            os.close(w)
        timed_out = False
        try:
            if case.sigint is not None:
                library, delay = case.sigint
                if _wait_for_library(proc, library):
                    if delay:
                        try:
                            proc.wait(timeout=delay)
                        except subprocess.TimeoutExpired:
                            pass
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGINT)
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    after = snapshot(folder)
    owned = lambda rel: any(rel == o or rel.startswith(o + "/") for o in case.owned)  # noqa: E731
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and not owned(k))
    result = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    verdict = None if case.check is None else bool(case.check(folder, result))
    return {"result": result, "timed_out": timed_out, "changed": changed, "verdict": verdict}


@pytest.fixture(scope="session")
def cli_results(tmp_path_factory):
    """Every subprocess case, run once, four at a time (they mostly wait on imports and I/O)."""
    fix = tmp_path_factory.mktemp("hostile") / "fixtures"
    fix.mkdir()
    torch.manual_seed(0)
    save_checkpoint(SSMPEncoder(CFG).eval(), fix / "model", {"note": "fuzz"})
    rng = np.random.default_rng(0)
    np.save(fix / "movie.npy", rng.standard_normal((30, D)).astype(np.float32))
    for root, dim in ((fix / "data", D), (fix / "data1024", 1024)):
        for split in ("train", "test"):
            for sub in ("movie_shot_embs", "trailer_shot_embs"):
                (root / split / sub).mkdir(parents=True)
            for k in range(3):
                m = rng.standard_normal((16 + k, dim)).astype(np.float32)
                np.save(root / split / "movie_shot_embs" / f"m{k}.npy", m)
                np.save(root / split / "trailer_shot_embs" / f"m{k}.npy", m[[1, 5, 9]])
    fixtures_before = snapshot(fix)
    all_cases = cases(fix)
    todo = {n: c for n, c in all_cases.items() if c.skip is None}
    with ThreadPoolExecutor(4) as pool:
        futures = {n: pool.submit(_run_case, fix, n, c) for n, c in todo.items()}
        results = {n: f.result() for n, f in futures.items()}
    assert snapshot(fix) == fixtures_before, "a case changed the shared fixtures"
    return all_cases, results


CASE_NAMES = sorted(cases(Path("/nonexistent")))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_cli_case(cli_results, name):
    all_cases, results = cli_results
    case = all_cases[name]
    if case.skip is not None:
        pytest.skip(case.skip)
    if case.sigint is not None and not os.path.exists(f"/proc/{os.getpid()}/maps"):
        pytest.skip("Ctrl-C moments are found through /proc/PID/maps (Linux)")
    got = results[name]
    if "skip" in got:
        pytest.skip(got["skip"])
    r = got["result"]
    assert not got["timed_out"], f"{name} hung: killed after {TIMEOUT} s; stderr: {r.stderr[-500:]}"
    assert "Traceback" not in r.stderr, r.stderr
    assert not got["changed"], f"{name} changed files it did not own: {got['changed']}"
    # eval's per-movie score lines are its normal progress output, not an error's
    lines = [line for line in r.stderr.splitlines() if line.strip() and not re.match(r"^\S+: f1 [0-9.]+ ", line)]
    if case.expect == "fail":
        assert r.returncode not in (0,) and r.returncode > 0, (r.returncode, r.stderr)
        assert 1 <= len(lines) <= 2 and lines[0].startswith("ssmp-infer: error:"), r.stderr
        for word in case.words:
            assert word.lower() in r.stderr.lower(), r.stderr
    elif case.expect == "ok":
        assert r.returncode == 0, r.stderr
    elif case.expect == "interrupt":
        # 130 after "interrupted"; 0 only if the work finished before a delayed Ctrl-C came
        assert r.returncode == 130 or (r.returncode == 0 and case.sigint[1] > 0), (r.returncode, r.stderr)
        assert len(lines) <= 2 if r.returncode else True, r.stderr
    else:  # closed pipes: any exit, but quietly
        assert len(lines) <= 2 and r.returncode >= 0, r.stderr
    if got["verdict"] is not None:
        assert got["verdict"], f"{name}: its result check failed; stderr: {r.stderr[-500:]}"


# --- in-process checks of the rules the CLI cases rely on -----------------------------------------


@pytest.mark.parametrize("field, value", [("lr", float("nan")), ("lr", float("inf")), ("lr", 0.0), ("lr", -1e-4),
                                          ("lr", 1e308), ("max_minutes", float("nan")), ("max_minutes", float("inf")),
                                          ("views", 10**9)])
def test_training_options_that_cannot_train_are_refused(field, value):
    from ssmp_infer.config import TrainConfig

    with pytest.raises(InputError, match=field.replace("_", "-")):
        TrainConfig(**{field: value})


# A command whose Ctrl-C is swallowed by C code that then fails with an unrelated error, as numpy's
# C initialisation does (an ImportError with no KeyboardInterrupt in its chain).
SWALLOWED_INTERRUPT = """
import os, signal, sys, time
import ssmp_infer.cli as cli
def swallowing_command():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    except KeyboardInterrupt:
        pass
    raise ImportError("PyCapsule_Import could not import module")
cli.main = swallowing_command
sys.argv = ["ssmp-infer", "run", "x.npy"]
from ssmp_infer.entry import main
sys.exit(main())
"""


def test_any_error_after_a_ctrl_c_is_reported_as_the_interrupt():
    r = subprocess.run([sys.executable, "-c", SWALLOWED_INTERRUPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 130 and r.stderr.strip() == "ssmp-infer: interrupted", r.stderr


def test_a_ctrl_c_while_torch_loads_waits_for_the_import_and_exits_130():
    """Under the noting handler the import finishes (no KeyboardInterrupt inside torch's C++ callbacks),
    then the command is never started."""
    code = ("import os, signal, sys\n"
            "import ssmp_infer.cli as cli\n"
            "cli.main = lambda: sys.exit('the command ran')\n"
            "sys.argv = ['ssmp-infer', 'run', 'x.npy']\n"
            "import builtins\n"
            "real = builtins.__import__\n"
            "def importing(name, *a, **k):\n"
            "    if name == 'torch': os.kill(os.getpid(), signal.SIGINT)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = importing\n"
            "from ssmp_infer.entry import main\n"
            "sys.exit(main())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 130 and r.stderr.strip() == "ssmp-infer: interrupted", r.stderr


@pytest.mark.parametrize("mode, field", [("topk", "steps"), ("paper", "max_rounds")])
def test_decoding_rounds_are_bounded(mode, field):
    from ssmp_infer.config import MAX_ROUNDS, DecodeConfig

    DecodeConfig(mode=mode, **{field: MAX_ROUNDS})
    with pytest.raises(InputError, match=str(MAX_ROUNDS)):
        DecodeConfig(mode=mode, **{field: MAX_ROUNDS + 1})


def test_a_non_finite_loss_stops_training_with_nothing_saved(tmp_path, monkeypatch):
    from ssmp_infer import train as train_module
    from ssmp_infer.config import TrainConfig

    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for sub in ("movie_shot_embs", "trailer_shot_embs"):
        (root / "train" / sub).mkdir(parents=True)
    for k in range(2):
        m = rng.standard_normal((12, D)).astype(np.float32)
        np.save(root / "train/movie_shot_embs" / f"m{k}.npy", m)
        np.save(root / "train/trailer_shot_embs" / f"m{k}.npy", m[[2, 7]])
    real, calls = train_module.masked_loss, []

    def loss_that_blows_up(*args, **kwargs):
        loss, accuracy = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), accuracy

    monkeypatch.setattr(train_module, "masked_loss", loss_that_blows_up)
    cfg = TrainConfig(epochs=5, batch_size=1, validation_fraction=0.0, device="cpu")
    with pytest.raises(InputError, match="diverged: the loss is nan at step 3"):
        train_module.train(root, tmp_path / "ck", CFG, cfg, log=io.StringIO())
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").iterdir())


def test_a_nan_model_is_never_saved(tmp_path):
    model = SSMPEncoder(CFG)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(InputError, match="NaN or Inf"):
        save_checkpoint(model, tmp_path / "ck", {})
    assert not (tmp_path / "ck").exists()


def test_trailers_of_another_dimension_are_blamed_on_the_data(tmp_path):
    from ssmp_infer.data import load_split

    for sub in ("movie_shot_embs", "trailer_shot_embs"):
        (tmp_path / "test" / sub).mkdir(parents=True)
    np.save(tmp_path / "test/movie_shot_embs/a.npy", np.ones((10, 1024), np.float32))
    np.save(tmp_path / "test/trailer_shot_embs/a.npy", np.ones((3, 512), np.float32))
    with pytest.raises(InputError, match="trailer .*a.npy has 512-d features but its movie .* has 1024-d") as info:
        load_split(tmp_path, "test", 1024)
    assert "model" not in str(info.value)


def test_synth_force_validates_everything_before_touching_a_marked_folder(tmp_path):
    from ssmp_infer.synth import MARKER, write_dataset

    root = tmp_path / "d"
    write_dataset(root, movies=2, min_shots=8, max_shots=10)
    assert (root / MARKER).is_file()
    before = snapshot(root)
    for bad in (dict(seed=-1), dict(test_fraction=float("nan")), dict(movies=10**12), dict(min_shots=10, max_shots=10**9)):
        with pytest.raises(InputError):
            write_dataset(root, force=True, **{"movies": 2, "min_shots": 8, "max_shots": 10, **bad})
        assert snapshot(root) == before, bad
    (root / MARKER).unlink()  # without its marker the folder is no longer synth's to replace
    with pytest.raises(InputError, match="not written by synth"):
        write_dataset(root, movies=2, min_shots=8, max_shots=10, force=True)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "dir", "trailing_slash"])
def test_output_paths_that_force_must_not_replace(tmp_path, kind):
    from ssmp_infer.atomic import write_text_atomic

    target = tmp_path / "out.json"
    if kind == "symlink":
        (tmp_path / "real.json").write_text("mine")
        os.symlink("real.json", target)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "dir":
        target.mkdir()
    before = snapshot(tmp_path)
    path = f"{tmp_path}/new/" if kind == "trailing_slash" else target
    with pytest.raises(InputError):
        write_text_atomic(path, "{}", force=True)
    assert snapshot(tmp_path) == before
