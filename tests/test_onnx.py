"""ONNX export and the ONNX Runtime backend: symbolic dims, parity with torch, the same trailers."""

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ssmp-infer[onnx]')")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'ssmp-infer[onnx]')")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install 'ssmp-infer[onnx]')")

from ssmp_infer.export import OPSET, export_onnx, read_metadata, weights_sha256  # noqa: E402

from ssmp_infer.backends import TorchBackend  # noqa: E402
from ssmp_infer.backends.onnx_backend import OnnxRuntimeBackend  # noqa: E402
from ssmp_infer.backends.tensorrt_backend import TensorRTBackend  # noqa: E402
from ssmp_infer.export.tensorrt_runtime import HAS_TENSORRT  # noqa: E402
from ssmp_infer.checkpoint import save_checkpoint  # noqa: E402
from ssmp_infer.cli import main  # noqa: E402
from ssmp_infer.config import DecodeConfig, ModelConfig  # noqa: E402
from ssmp_infer.engine import Engine  # noqa: E402
from ssmp_infer.errors import InputError  # noqa: E402
from ssmp_infer.model import SSMPEncoder  # noqa: E402

from .helpers import assert_close  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "movie.npy"
D = 16
TOL = dict(atol=1e-4, rtol=1e-4)


def tiny_model(movie_attention, shot_prior, seed=0, position_keys=True, **context):
    torch.manual_seed(seed)
    cfg = ModelConfig(feature_dim=D, d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0, temperature=0.1,
                      movie_attention=movie_attention, shot_prior=shot_prior, context_prior=shot_prior,
                      position_keys=position_keys, **context)
    model = SSMPEncoder(cfg).eval()
    with torch.no_grad():  # sharper than the init, so attention is far from uniform and padding would show
        for p in model.parameters():
            p.mul_(4.0 if p.dim() >= 2 else 1.0)
        if model.shot_head is not None:
            model.shot_head.weight.normal_(0.0, 0.5)  # zero at init: make b_i differ between shots
        if model.context_prior is not None:
            model.context_prior.mlp[-1].weight.normal_(0.0, 0.5)  # zero at init too
        if model.key_position is not None:
            model.key_position.weight.normal_(0.0, 0.5)  # zero at init: keys that are not the unit movie
    return model


def padded_batch(B, I, J, seed):
    """Random features, every row of its own length (the first full), about half the slots masked."""
    g = torch.Generator().manual_seed(seed)
    movie_len = torch.cat([torch.tensor([I]), torch.randint(max(1, I // 3), I + 1, (B - 1,), generator=g)])
    slot_len = torch.cat([torch.tensor([J]), torch.randint(1, J + 1, (B - 1,), generator=g)])
    movie_valid = torch.arange(I)[None] < movie_len[:, None]
    slot_valid = torch.arange(J)[None] < slot_len[:, None]
    movie = torch.randn(B, I, D, generator=g) * movie_valid[..., None]
    slots = torch.randn(B, J, D, generator=g)
    slot_masked = torch.rand(B, J, generator=g) < 0.5
    return movie, movie_valid, slots, slot_masked, slot_valid


@pytest.fixture(scope="module")
def prefix_export(tmp_path_factory):
    """A prefix-attention model with a shot prior, its context branch (with the local read, the novelty
    feature, the similarity profile and dropout, which the graph must leave out) and position keys, saved as
    a checkpoint and exported by the CLI."""
    root = tmp_path_factory.mktemp("prefix")
    model = tiny_model("prefix", shot_prior=True, local_context=True, context_novelty=True, context_hidden=24,
                       context_dropout=0.5, context_profile=3)
    save_checkpoint(model, root / "model", provenance={})
    out = root / "onnx"
    done = subprocess.run(
        [sys.executable, "-m", "ssmp_infer.cli", "export", "--model", str(root / "model"), "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(Path(f).name for f in summary["files"]) == ["prepare.onnx", "shot_keys.onnx", "step.onnx"]
    assert summary["weights_sha256"] == weights_sha256(model)
    return model, root, out


@pytest.fixture(scope="module")
def full_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    model = tiny_model("full", shot_prior=False, seed=1)  # position keys without a shot prior
    assert sorted(export_onnx(model, out)) == ["full", "shot_keys", "step"]
    return model, out


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("which", ["prefix", "full"])
def test_graphs_check_have_symbolic_dims_and_carry_the_model(which, prefix_export, full_export):
    model, out = (prefix_export[0], prefix_export[2]) if which == "prefix" else full_export
    cfg = model.cfg
    L, H, hd = cfg.n_layers, cfg.n_heads, cfg.head_dim
    movie = {"movie": ["batch", "shots", D], "movie_valid": ["batch", "shots"]}
    slots = {"slots": ["batch", "slots", D], "slot_masked": ["batch", "slots"], "slot_valid": ["batch", "slots"]}
    states = {"keys": [L, "batch", H, "shots", hd], "values": [L, "batch", H, "shots", hd]}
    prior = {"shot_prior": ["batch", "shots"]} if cfg.shot_prior else {}
    want = {
        "prepare": (movie, {**states, **prior}),
        "step": ({**states, "movie_valid": movie["movie_valid"], **slots}, {"pred": ["batch", "slots", D]}),
        "full": ({**movie, **slots}, {"pred": ["batch", "slots", D], **states, **prior}),
        "shot_keys": (movie, {"shot_keys": ["batch", "shots", D]}),
    }
    graphs = ("prepare", "step", "shot_keys") if which == "prefix" else ("full", "step", "shot_keys")
    assert sorted(p.name for p in out.glob("*.onnx")) == sorted(f"{g}.onnx" for g in graphs)
    for graph in graphs:
        proto = onnx.load(str(out / f"{graph}.onnx"))
        onnx.checker.check_model(proto, full_check=True)
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17 and OPSET >= 17
        inputs, outputs = want[graph]
        assert {v.name: dims(v) for v in proto.graph.input} == inputs, graph
        assert {v.name: dims(v) for v in proto.graph.output} == outputs, graph  # no J×I scores among them
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["ssmp_infer.model_config"]) == cfg.to_dict()
        assert meta["ssmp_infer.weights_sha256"] == weights_sha256(model)
        assert meta["ssmp_infer.graph"] == graph
    assert read_metadata(out)["weights_sha256"] != weights_sha256(tiny_model(cfg.movie_attention, cfg.shot_prior, seed=9))


@pytest.mark.parametrize("which", ["prefix", "full"])
def test_attention_is_one_fused_node_per_layer(which, prefix_export, full_export):
    """Opset 23's Attention op, which ONNX Runtime runs as one kernel, not a MatMul/Softmax chain that
    materialises every head's I×I scores."""
    model, out = (prefix_export[0], prefix_export[2]) if which == "prefix" else full_export
    for path in set(out.glob("*.onnx")) - {out / "shot_keys.onnx"}:  # the keys read no attention
        ops = [node.op_type for node in onnx.load(str(path)).graph.node]
        assert ops.count("Attention") == model.cfg.n_layers, path.name
        assert "Softmax" not in ops, path.name


# Two (I, J) pairs and one batch of 1, all run by the same files: a dim specialised at export fails here.
SIZES = [(3, 23, 6), (4, 61, 17), (1, 9, 1)]


def assert_shot_keys_match(got, want, movie_valid):
    """The rows both backends score against: the model's position keys (not the unit movie), the same,
    and the same in the output basis' coordinates."""
    real = movie_valid[..., None]
    assert want.shot_keys is not None and (want.shot_keys - want.movie_unit).abs()[movie_valid].max() > 0.1
    assert_close(got.scoring_keys * real, want.scoring_keys * real, **TOL)
    if want.movie_coords is not None:
        assert_close(got.movie_coords * real, want.movie_coords * real, **TOL)


@pytest.mark.parametrize("B,I,J", SIZES)
def test_prefix_prepare_and_step_match_torch(B, I, J, prefix_export):
    model, _, out = prefix_export
    ref, ort_backend = TorchBackend(model), OnnxRuntimeBackend(out, weights_sha256=weights_sha256(model))
    movie, movie_valid, slots, slot_masked, slot_valid = padded_batch(B, I, J, seed=I)
    want, got = ref.prepare(movie, movie_valid), ort_backend.prepare(movie, movie_valid)
    assert_close(got.cache.keys, torch.stack(want.cache.keys), **TOL)
    assert_close(got.cache.values, torch.stack(want.cache.values), **TOL)
    assert torch.equal(torch.isinf(got.shot_prior), ~movie_valid)
    assert_close(got.shot_prior.masked_fill(~movie_valid, 0), want.shot_prior.masked_fill(~movie_valid, 0), **TOL)
    assert_shot_keys_match(got, want, movie_valid)
    for round_ in range(2):  # two rounds on one state: the cache is read, never changed
        masked = slot_masked if round_ == 0 else ~slot_masked
        pred = ort_backend.step(got, slots, masked, slot_valid)
        assert_close(pred, ref.step(want, slots, masked, slot_valid), **TOL)
    if B > 1:  # finished movies leave the batch: the cache is batch-first along its dim 1
        rows = torch.tensor([B - 1, 0])
        pred = ort_backend.step(got.select(rows), slots[rows], slot_masked[rows], slot_valid[rows])
        assert_close(pred, ref.step(want.select(rows), slots[rows], slot_masked[rows], slot_valid[rows]), **TOL)


@pytest.mark.parametrize("B,I,J", SIZES[:2])
@pytest.mark.parametrize("refresh_every", [1, 2])
def test_full_attention_full_and_step_graphs_match_torch(B, I, J, refresh_every, full_export):
    model, out = full_export
    ref, ort_backend = TorchBackend(model), OnnxRuntimeBackend(out)
    movie, movie_valid, slots, slot_masked, slot_valid = padded_batch(B, I, J, seed=I + 1)
    want, got = ref.prepare(movie, movie_valid, refresh_every), ort_backend.prepare(movie, movie_valid, refresh_every)
    assert_shot_keys_match(got, want, movie_valid)  # known before the first step: pinned slots read them
    for round_ in range(3):  # refresh_every 2: full.onnx, step.onnx on the stale states, full.onnx
        masked = slot_masked ^ (torch.arange(J) < round_)
        assert_close(ort_backend.step(got, slots, masked, slot_valid), ref.step(want, slots, masked, slot_valid), **TOL)
    assert (got.cache is None) == (refresh_every == 1)


@pytest.fixture(scope="module")
def int8_export(prefix_export):
    model, root, _ = prefix_export
    out = root / "onnx_int8"
    assert main(["export", "--model", str(root / "model"), "--out", str(out), "--precision", "int8"]) == 0
    return out


def test_int8_export_quantises_every_linear_layer_and_stays_close(int8_export, prefix_export):
    model = prefix_export[0]
    assert read_metadata(int8_export)["precision"] == "int8"
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    for graph in ("prepare", "step"):
        proto = onnx.load(str(int8_export / f"{graph}.onnx"))
        onnx.checker.check_model(proto, full_check=True)
        weights = {t.name: t for t in proto.graph.initializer}
        ops = [n.op_type for n in proto.graph.node]
        # No float MatMul reads a weight any more; each layer's weight is an int8 tensor now.
        assert not [n for n in proto.graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)]
        int8_weights = [t for t in weights.values() if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
        # prepare reads all but the slot positions, the output projection and the position keys; step
        # all but the movie positions, the shot prior (its head and the context branch's two layers)
        # and the position keys.
        unread = 3 if graph == "prepare" else 5
        assert ops.count("MatMulInteger") == len(int8_weights) == n_linear - unread
        assert ops.count("Attention") == model.cfg.n_layers  # attention stays float32
    movie, movie_valid, slots, slot_masked, slot_valid = padded_batch(3, 61, 17, seed=5)
    ref, q = TorchBackend(model), OnnxRuntimeBackend(int8_export, weights_sha256=weights_sha256(model), precision="int8")
    want = ref.step(ref.prepare(movie, movie_valid), slots, slot_masked, slot_valid)
    got = q.step(q.prepare(movie, movie_valid), slots, slot_masked, slot_valid)
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)[slot_valid]
    assert cos.min() > 0.99  # what the decoder reads (cosine to the shots) barely moves
    assert (got - want).abs().max() > 1e-5  # ...but it is the quantised graph, not the fp32 one


def test_files_of_other_weights_are_refused(prefix_export):
    _, _, out = prefix_export
    with pytest.raises(InputError, match="exported from other weights"):
        OnnxRuntimeBackend(out, weights_sha256="0" * 64)


def test_export_refuses_to_overwrite_without_force(prefix_export, capsys):
    _, root, out = prefix_export
    before = {p.name: p.read_bytes() for p in out.glob("*.onnx")}
    assert main(["export", "--model", str(root / "model"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists; pass --force" in err
    assert {p.name: p.read_bytes() for p in out.glob("*.onnx")} == before


def test_run_cli_with_the_onnxruntime_backend_gives_the_torch_trailer(prefix_export, tmp_path, capsys):
    _, root, out = prefix_export
    movie = tmp_path / "movie.npy"
    np.save(movie, np.random.default_rng(3).standard_normal((80, D)).astype(np.float32))
    trailers = {}
    for backend in ("torch", "onnxruntime"):
        extra = ["--onnx", str(out)] if backend == "onnxruntime" else []
        assert main(["run", str(movie), "--model", str(root / "model"), "--device", "cpu", "--backend", backend, *extra]) == 0
        trailers[backend] = json.loads(capsys.readouterr().out)
    assert trailers["onnxruntime"]["backend"] == "onnxruntime"
    assert trailers["onnxruntime"]["shots"] == trailers["torch"]["shots"]


def test_engine_load_rejects_options_the_backend_cannot_honour(prefix_export):
    _, root, out = prefix_export
    with pytest.raises(InputError, match="runs fp32 or int8 graphs, not bf16"):
        Engine.load(root / "model", device="cpu", backend="onnxruntime", precision="bf16", onnx_dir=out)
    with pytest.raises(InputError, match="are fp32 graphs, not int8"):
        Engine.load(root / "model", device="cpu", backend="onnxruntime", precision="int8", onnx_dir=out)
    with pytest.raises(InputError, match="int8 ONNX graphs are for the CPU"):
        OnnxRuntimeBackend.for_model(prefix_export[0], "cuda", out, precision="int8")
    with pytest.raises(InputError, match="onnxruntime backend only"):
        Engine.load(root / "model", device="cpu", backend="torch", onnx_dir=out)


@pytest.mark.parametrize("which", ["prefix", "full"])
def test_the_io_binding_path_gives_the_plain_runs_outputs_bit_for_bit(which, prefix_export, full_export):
    """The path a GPU takes (torch memory bound to the graphs' inputs and outputs, output shapes worked
    out here), run on the CPU, where ORT binds host memory the same way: every graph's outputs, the
    cache's layout and the trailers are those of the plain run. Outputs start poisoned (NaN) so that
    one ORT does not write shows."""
    model, out = (prefix_export[0], prefix_export[2]) if which == "prefix" else full_export
    plain = OnnxRuntimeBackend(out, weights_sha256=weights_sha256(model))
    bound = OnnxRuntimeBackend(out, weights_sha256=weights_sha256(model), io_binding=True)
    assert bound.io_binding and not plain.io_binding
    empty = torch.empty
    torch_empty = lambda *a, **k: empty(*a, **k).fill_(float("nan"))  # noqa: E731
    movie, movie_valid, slots, slot_masked, slot_valid = padded_batch(3, 23, 6, seed=4)

    def same(a, b, what):
        assert (a is None) == (b is None), what
        if a is not None:
            assert a.shape == b.shape and torch.equal(a, b), what

    for refresh_every in ([None] if which == "prefix" else [1, 2]):
        with mock.patch.object(torch, "empty", torch_empty):
            got = bound.prepare(movie, movie_valid, refresh_every)
        want = plain.prepare(movie, movie_valid, refresh_every)
        for round_ in range(3):  # full attention with k = 2 runs the full graph, then step, then full
            masked = slot_masked ^ (torch.arange(6) < round_)
            with mock.patch.object(torch, "empty", torch_empty):
                pred = bound.step(got, slots, masked, slot_valid)
            same(pred, plain.step(want, slots, masked, slot_valid), f"pred, round {round_}")
            for field in ("shot_prior", "shot_keys", "movie_coords"):
                same(getattr(got, field), getattr(want, field), field)
            if want.cache is not None:
                same(got.cache.keys, want.cache.keys, "keys")
                same(got.cache.values, want.cache.values, "values")
    features = np.random.default_rng(2).standard_normal((60, model.cfg.feature_dim)).astype(np.float32)
    config = DecodeConfig(mode="topk", seed=1)
    got = Engine(model.cfg, bound).generate(features, 6, config)
    assert got.shots == Engine(model.cfg, plain).generate(features, 6, config).shots


@pytest.fixture(scope="module")
def bundled_engines(tmp_path_factory):
    """The bundled model behind both backends; onnxruntime exports into a fresh cache on first use."""
    cache = tmp_path_factory.mktemp("cache")
    with mock.patch.dict(os.environ, {"SSMP_INFER_CACHE": str(cache)}):
        ort_engine = Engine.load(device="cpu", backend="onnxruntime")
        entries = list((cache / "onnx").iterdir())
        graphs = ["prepare.onnx", "step.onnx"] + (["shot_keys.onnx"] if ort_engine.model_config.position_keys else [])
        assert len(entries) == 1 and sorted(p.name for p in entries[0].glob("*.onnx")) == sorted(graphs)
        stamps = [p.stat().st_mtime_ns for p in entries[0].glob("*.onnx")]
        again = Engine.load(device="cpu", backend="onnxruntime")  # the second load reads the cache
        assert [p.stat().st_mtime_ns for p in entries[0].glob("*.onnx")] == stamps
        assert again.backend.onnx_dir == entries[0]
    return Engine.load(device="cpu", backend="torch"), ort_engine


@pytest.mark.parametrize("mode", ["paper", "topk"])
def test_bundled_model_gives_the_same_trailer_under_both_backends(mode, bundled_engines):
    torch_engine, ort_engine = bundled_engines
    features = np.load(EXAMPLE)
    config = DecodeConfig(mode=mode, seed=11)
    want, got = torch_engine.generate(features, decode=config), ort_engine.generate(features, decode=config)
    assert got.backend == "onnxruntime" and want.backend == "torch"
    # both score in the model's output span (fp32 graphs of the same out_proj), 193 of 1024 dimensions
    assert torch.equal(ort_engine.backend.output_basis, torch_engine.backend.output_basis)
    assert ort_engine.backend.output_basis.shape == (1024, 193)
    assert got.shots == want.shots and got.steps == want.steps
    assert np.allclose(got.confidence, want.confidence, atol=1e-4)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here; the missing-extra sentence cannot be seen")
def test_tensorrt_without_the_extra_is_one_sentence_naming_it(tmp_path, capsys):
    assert main(["export", "--format", "tensorrt", "--out", str(tmp_path / "trt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'ssmp-infer[tensorrt]'" in err
    with pytest.raises(InputError, match=r"ssmp-infer\[tensorrt\]"):
        TensorRTBackend()
