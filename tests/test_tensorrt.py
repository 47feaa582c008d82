"""TensorRT engines: profiles, the cache key and the fp16 graphs engines are built from (on the CPU);
the build and the backend against a stand-in for TensorRT's API that runs the fp16 graphs with ONNX
Runtime (on the CPU); and the real thing where TensorRT and a CUDA GPU exist.

fp16 tolerance: atol = rtol = 1e-2. fp16 keeps 11 significant bits (a step of 2^-10 ≈ 1e-3 relative);
the tiny models' keys, values and predictions are O(1) and come out of 2 layers of fp16, and
their measured error is ~1e-3 (the bundled model's too). A conversion that lets the position features
through fp16 is off by ~0.1 on a 2600-shot movie and fails it (test_fp32_input_side_...).
"""

import contextlib
import ctypes
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ssmp-infer[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'ssmp-infer[onnx]')")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install 'ssmp-infer[onnx]')")

import ssmp_infer.export.tensorrt_export as trt_export  # noqa: E402
from ssmp_infer.backends import TorchBackend  # noqa: E402
from ssmp_infer.backends.tensorrt_backend import TensorRTBackend  # noqa: E402
from ssmp_infer.export import tensorrt_runtime  # noqa: E402
from ssmp_infer.export.tensorrt_runtime import HAS_TENSORRT, require_tensorrt  # noqa: E402
from ssmp_infer.checkpoint import load_checkpoint  # noqa: E402
from ssmp_infer.config import DecodeConfig, ModelConfig  # noqa: E402
from ssmp_infer.engine import Engine  # noqa: E402
from ssmp_infer.errors import InputError  # noqa: E402
from ssmp_infer.export import Profiles, build_engines, cached_engine_dir, engine_cache_key, export_tensorrt  # noqa: E402
from ssmp_infer.export.onnx_export import export_onnx, graph_names, weights_sha256  # noqa: E402
from ssmp_infer.export.tensorrt_export import (  # noqa: E402
    TENSORRT_OPSET, export_fp16_onnx, fp16_graph, input_profile_shapes, input_side_nodes,
)
from ssmp_infer.model import SSMPEncoder  # noqa: E402

from .helpers import assert_close  # noqa: E402

GPU = HAS_TENSORRT and torch.cuda.is_available()
REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "movie.npy"
FP16 = dict(atol=1e-2, rtol=1e-2)
# Every fixed dim differs from every other (D, L, H, hd = 24, 2, 4, 8), so a permuted shape cannot pass.
D = 24


def tiny_model(movie_attention, shot_prior, seed=0, presets_priors=False):
    """`presets_priors`: also the context branch with its local read and the position keys, as both
    presets have them (and as every bundled model is built)."""
    torch.manual_seed(seed)
    extra = dict(context_prior=True, local_context=True, position_keys=True) if presets_priors else {}
    cfg = ModelConfig(feature_dim=D, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.0,
                      temperature=0.1, movie_attention=movie_attention, shot_prior=shot_prior, **extra)
    model = SSMPEncoder(cfg).eval()
    with torch.no_grad():  # sharper than the init (whose new branches start at zero), so every part matters
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.mul_(4.0) if p.abs().max() > 0 else p.normal_(0.0, 0.3)
        if model.shot_head is not None:
            model.shot_head.weight.normal_(0.0, 0.5)
    return model


def padded_batch(lengths, J, seed, slot_lengths=None):
    """Movies of the given lengths padded to the longest, raw (not unit) slot features, half masked."""
    g = torch.Generator().manual_seed(seed)
    B, I = len(lengths), max(lengths)
    movie_valid = torch.arange(I)[None] < torch.tensor(lengths)[:, None]
    slot_valid = torch.arange(J)[None] < torch.tensor(slot_lengths or [J] * B)[:, None]
    movie = torch.randn(B, I, D, generator=g) * movie_valid[..., None]
    slots = 5 * torch.randn(B, J, D, generator=g)
    return movie, movie_valid, slots, torch.rand(B, J, generator=g) < 0.5, slot_valid


@pytest.fixture(scope="module")
def fp32_exports(tmp_path_factory):
    """{"prefix"/"full": (model, {graph: opset-18 fp32 path})}: the graphs engines are built from,
    exported once (the exporter takes seconds per graph) and converted to fp16 by each test."""
    root = tmp_path_factory.mktemp("fp32")
    exports = {}
    for name, attention, prior in (("prefix", "prefix", True), ("full", "full", False), ("presets", "prefix", True)):
        model = tiny_model(attention, prior, seed=len(name), presets_priors=name == "presets")
        exports[name] = model, export_onnx(model, root / name, opset=TENSORRT_OPSET)
    return exports


@pytest.fixture(scope="module")
def fp16_protos(fp32_exports):
    return {att: (model, {g: fp16_graph(onnx.load(str(p))) for g, p in paths.items()})
            for att, (model, paths) in fp32_exports.items()}


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def session(proto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------ profiles and keys


def test_default_profiles_cover_long_movies_and_trailers():
    p = Profiles()
    assert p.shots[2] >= 8192 and p.slots[2] >= 256 and p.batch[0] == p.shots[0] == p.slots[0] == 1
    assert (p.shots[1], p.slots[1]) == (1909, 71)  # TensorRT tunes for the CMTD means
    for low, opt, high in (p.batch, p.shots, p.slots):
        assert 1 <= low <= opt <= high


@pytest.mark.parametrize("field,value", [
    ("shots", (0, 5, 10)), ("shots", (1, 11, 10)), ("slots", (4, 3, 10)), ("batch", (1, 2)),
    ("batch", (1.0, 2, 3)), ("slots", (True, 2, 3)), ("shots", "1,2,3"),
])
def test_invalid_profiles_are_refused_in_one_sentence(field, value):
    with pytest.raises(InputError) as e:
        Profiles(**{field: value})
    assert len(str(e.value).splitlines()) == 1 and field in str(e.value) and "min <= opt <= max" in str(e.value)


def test_profiles_round_trip_through_json():
    p = Profiles(batch=(1, 2, 8), shots=(16, 500, 4096), slots=(2, 20, 128))
    assert Profiles.from_dict(json.loads(json.dumps(p.to_dict()))) == p


@pytest.mark.parametrize("attention", ["prefix", "full"])
def test_every_graph_input_gets_a_profile_of_its_own_shape(attention, fp16_protos):
    """Checked against the graphs themselves: same inputs, same rank, the fixed dims the graph's, and
    batch/shots/slots taken from the right profile (all six numbers differ, so a swap shows)."""
    model, protos = fp16_protos[attention]
    profiles = Profiles(batch=(2, 3, 5), shots=(7, 11, 13), slots=(17, 19, 23))
    symbolic = {"batch": profiles.batch, "shots": profiles.shots, "slots": profiles.slots}
    for graph in graph_names(model.cfg):
        shapes = input_profile_shapes(model.cfg, graph, profiles)
        inputs = {v.name: dims(v) for v in protos[graph].graph.input}
        assert set(shapes) == set(inputs), graph
        for name, graph_dims in inputs.items():
            for which in range(3):  # min, opt, max
                want = tuple(symbolic[d][which] if isinstance(d, str) else d for d in graph_dims)
                assert shapes[name][which] == want, (graph, name, which)
    cfg = model.cfg
    keys = input_profile_shapes(cfg, "step", profiles)["keys"]
    assert keys[2] == (cfg.n_layers, 5, cfg.n_heads, 13, cfg.head_dim)  # (L, B, H, I, hd) at max


def test_cache_key_changes_with_every_ingredient_and_only_then():
    base = dict(weights_sha256="a" * 64, gpu_name="NVIDIA H100 80GB HBM3", tensorrt_version="10.9.0.34",
                precision="fp16", profiles=Profiles(), model_config={"d_model": 192})
    key = engine_cache_key(**base)
    again = {**base, "profiles": Profiles.from_dict(json.loads(json.dumps(Profiles().to_dict())))}
    assert engine_cache_key(**again) == key and len(key) == 32 and key.isalnum()
    changes = dict(weights_sha256="b" * 64, gpu_name="NVIDIA A100-SXM4-80GB", tensorrt_version="10.9.0.35",
                   precision="bf16", profiles=Profiles(shots=(1, 1909, 8193)), model_config={"d_model": 193})
    keys = {engine_cache_key(**{**base, name: value}) for name, value in changes.items()}
    assert len(keys) == len(changes) and key not in keys
    assert trt_export.engine_cache_dir(key).parts[-2:] == ("tensorrt", key)


# ------------------------------------------------------------------------------------ fp16 graphs


@pytest.mark.parametrize("attention", ["prefix", "full"])
def test_fp16_graphs_check_keep_the_interface_and_have_fp16_weights(attention, fp32_exports, fp16_protos):
    model, fp32_paths = fp32_exports[attention]
    for graph, proto in fp16_protos[attention][1].items():
        original = onnx.load(str(fp32_paths[graph]))
        onnx.checker.check_model(proto, full_check=True)
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == TENSORRT_OPSET
        io = lambda m: [(v.name, v.type.tensor_type.elem_type, dims(v)) for v in [*m.graph.input, *m.graph.output]]  # noqa: E731
        assert io(proto) == io(original), graph  # fp32/bool, symbolic "batch"/"shots"/"slots", same order
        assert any(isinstance(d, str) for _, _, ds in io(proto) for d in ds)
        meta, before = {p.key: p.value for p in proto.metadata_props}, {p.key: p.value for p in original.metadata_props}
        assert meta == {**before, "ssmp_infer.precision": "fp16"}
        assert meta["ssmp_infer.weights_sha256"] == weights_sha256(model) and meta["ssmp_infer.graph"] == graph
        # Every matrix is fp16; what stays fp32 is read only by the nodes kept fp32 on purpose.
        kept = input_side_nodes(original.graph)
        readers = {}
        for node in proto.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        sizes = {"fp16": 0, "fp32": 0}
        for init in proto.graph.initializer:
            n = int(np.prod(init.dims))
            if init.data_type == onnx.TensorProto.FLOAT:
                sizes["fp32"] += n
                assert all(r.op_type == "LayerNormalization" or r.name in kept for r in readers.get(init.name, [])), init.name
            elif init.data_type == onnx.TensorProto.FLOAT16:
                sizes["fp16"] += n
        # The LayerNorms and the position features compute in fp32 (the types TensorRT will run them in).
        inferred = onnx.shape_inference.infer_shapes(proto)
        types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.input, *inferred.graph.value_info]}
        types.update({i.name: i.data_type for i in proto.graph.initializer})
        fp32_nodes = [n for n in proto.graph.node if n.op_type in ("LayerNormalization", "Sin", "Cos", "ReduceL2")]
        assert len(fp32_nodes) >= 4 and not any(types[i] == onnx.TensorProto.FLOAT16 for n in fp32_nodes for i in n.input if i)
        matrices = [i for i in proto.graph.initializer if len(i.dims) == 2 and min(i.dims) > 1]
        assert matrices and all(m.data_type == onnx.TensorProto.FLOAT16 for m in matrices)
        assert sizes["fp32"] < 0.05 * sizes["fp16"], sizes  # LayerNorm scales, mask token, constants


def test_input_side_is_the_normalisation_positions_and_masks(fp32_exports):
    """What stays fp32: computed from the inputs before any matrix product; no MatMul, no LayerNorm."""
    _, paths = fp32_exports["prefix"]
    graph = onnx.load(str(paths["prepare"])).graph
    kept = [n for n in graph.node if n.name in input_side_nodes(graph)]
    ops = {n.op_type for n in kept}
    assert {"ReduceL2", "Sin", "Cos", "CumSum", "Range"} <= ops
    assert not ops & {"MatMul", "Gemm", "LayerNormalization", "Softmax"}


def _fp16_vs_torch(model, protos, lengths, J, seed, slot_lengths=None):
    """(ONNX Runtime on the fp16 prepare/step graphs, torch fp32): keys, values, prior, pred each."""
    movie, movie_valid, slots, slot_masked, slot_valid = padded_batch(lengths, J, seed, slot_lengths)
    ref = TorchBackend(model)
    want = ref.prepare(movie, movie_valid)
    keys, values, prior = session(protos["prepare"]).run(None, {"movie": want.movie_unit.numpy(), "movie_valid": movie_valid.numpy()})
    feed = {"keys": keys, "values": values, "movie_valid": movie_valid.numpy(), "slots": slots.numpy(),
            "slot_masked": slot_masked.numpy(), "slot_valid": slot_valid.numpy()}
    pred = session(protos["step"]).run(None, feed)[0]
    valid = movie_valid[None, :, None, :, None]  # padded shots' states are never read
    got = dict(keys=torch.from_numpy(keys) * valid, values=torch.from_numpy(values) * valid,
               prior=torch.from_numpy(prior)[movie_valid], pred=torch.from_numpy(pred)[slot_valid])
    expected = dict(keys=torch.stack(want.cache.keys) * valid, values=torch.stack(want.cache.values) * valid,
                    prior=want.shot_prior[movie_valid], pred=ref.step(want, slots, slot_masked, slot_valid)[slot_valid])
    assert torch.equal(torch.isinf(torch.from_numpy(prior)), ~movie_valid)  # -inf on padding, as in torch
    return got, expected


@pytest.mark.parametrize("lengths,J,slot_lengths", [([61, 23, 40], 17, [17, 4, 11]), ([2600, 1300], 9, None)])
def test_fp16_graphs_on_onnx_runtime_match_torch_fp32(lengths, J, slot_lengths, fp16_protos):
    """ORT's CPU provider runs the fp16 graphs (casting up where it lacks an fp16 kernel, so it checks
    the fp16 weights and the fp16 tensors between ops, not fp16 accumulation). 2600 shots: positions
    past 2048, which fp16 cannot count."""
    model, protos = fp16_protos["prefix"]
    got, expected = _fp16_vs_torch(model, protos, lengths, J, seed=len(lengths), slot_lengths=slot_lengths)
    for name in got:
        assert_close(got[name], expected[name], **FP16)


def test_fp32_input_side_is_what_keeps_long_movies_within_fp16_tolerance(fp32_exports, monkeypatch):
    """The same conversion with the input side left to fp16 (the converter's default): off by far more
    than the tolerance on a 2600-shot movie, so the fp32 input side is not decoration."""
    model, paths = fp32_exports["prefix"]
    monkeypatch.setattr(trt_export, "input_side_nodes", lambda graph: set())
    plain = {g: fp16_graph(onnx.load(str(p))) for g, p in paths.items()}
    got, expected = _fp16_vs_torch(model, plain, [2600, 1300], 9, seed=2)
    with pytest.raises(AssertionError, match="elements differ"):
        assert_close(got["keys"], expected["keys"], **FP16)


def test_export_fp16_onnx_writes_checked_files_and_refuses_to_overwrite(fp32_exports, tmp_path, monkeypatch):
    model, paths = fp32_exports["prefix"]
    _reuse_fp32_export(monkeypatch, fp32_exports)
    written = export_fp16_onnx(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepare.fp16.onnx", "step.fp16.onnx"]
    for path in written.values():
        onnx.checker.check_model(str(path), full_check=True)
    before = {p: p.read_bytes() for p in written.values()}
    with pytest.raises(InputError, match="already exists; pass --force"):
        export_fp16_onnx(model, tmp_path)
    assert {p: p.read_bytes() for p in written.values()} == before


def _reuse_fp32_export(monkeypatch, fp32_exports):
    """export_onnx copies the fixture's opset-18 files instead of exporting again (seconds per graph)."""
    by_weights = {weights_sha256(model): paths for model, paths in fp32_exports.values()}

    def copy_export(model, out_dir, force=False, opset=None, **kwargs):
        assert opset == TENSORRT_OPSET
        out = {}
        for graph, path in by_weights[weights_sha256(model)].items():
            out[graph] = Path(out_dir) / path.name
            out[graph].write_bytes(path.read_bytes())
        return out

    monkeypatch.setattr(trt_export, "export_onnx", copy_export)


# ------------------------------------------------------------------------------- without TensorRT


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here; the missing-extra sentence cannot be seen")
def test_without_tensorrt_every_entry_point_is_one_sentence_naming_the_extra(tmp_path):
    for call in (require_tensorrt, lambda: TensorRTBackend(tmp_path), lambda: export_tensorrt(tiny_model("prefix", False), tmp_path),
                 lambda: TensorRTBackend.for_model(tiny_model("prefix", False), "cuda")):
        with pytest.raises(InputError) as e:
            call()
        assert str(e.value) == tensorrt_runtime.MISSING and len(str(e.value).splitlines()) == 1
        assert "pip install 'ssmp-infer[tensorrt]'" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_with_tensorrt_but_no_gpu_the_sentence_says_so(monkeypatch):
    monkeypatch.setattr(tensorrt_runtime, "HAS_TENSORRT", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA device") as e:
        require_tensorrt()
    assert len(str(e.value).splitlines()) == 1


def test_engines_run_on_cuda_devices_only():
    assert tensorrt_runtime.cuda_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(InputError, match="CUDA device, not cpu"):
        tensorrt_runtime.cuda_device("cpu")


# ------------------------------------------------------- the build and the backend, on a stand-in


class FakeTensorRT:
    """The part of TensorRT 10's Python API that tensorrt_export and the backend call, on the CPU.

    An "engine" is the fp16 ONNX graph plus its one profile, run by ONNX Runtime; addresses are read
    and written as host memory. It refuses what TensorRT refuses: a network that is not strongly typed,
    a profile that misses an input or is not min <= opt <= max, a build without a workspace limit, an
    input shape outside the profile, an address off a 256-byte boundary (`set_tensor_address` returns
    False, as TensorRT's does), running before every input has a shape and an address, and running on
    the legacy default stream (handle 0). Its enum values are TensorRT's own.
    """

    __version__ = "10.99.0.fake"
    builds = 0
    unsupported = {"Attention"}  # as TensorRT's parser would say of an op it has no importer for

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    class NetworkDefinitionCreationFlag:
        EXPLICIT_BATCH, STRONGLY_TYPED = 0, 1

    class MemoryPoolType:
        WORKSPACE = 0

    class TensorIOMode:
        INPUT, OUTPUT = "INPUT", "OUTPUT"

    class DataType:
        FLOAT, HALF, BOOL, INT32, INT64 = "FLOAT", "HALF", "BOOL", "INT32", "INT64"

    class Builder:
        def __init__(self, logger):
            assert isinstance(logger, FakeTensorRT.Logger)

        def create_network(self, flags):
            return SimpleNamespace(strongly_typed=bool(flags & (1 << FakeTensorRT.NetworkDefinitionCreationFlag.STRONGLY_TYPED)),
                                   onnx=None, num_inputs=0, get_input=None)

        def create_builder_config(self):
            config = SimpleNamespace(profiles=[], pool_limits={})
            config.add_optimization_profile = config.profiles.append
            config.set_memory_pool_limit = config.pool_limits.__setitem__
            return config

        def create_optimization_profile(self):
            shapes = {}
            return SimpleNamespace(shapes=shapes, set_shape=lambda name, low, opt, high: shapes.update({name: (low, opt, high)}))

        def build_serialized_network(self, network, config):
            assert network.strongly_typed, "the network must be strongly typed"
            assert 0 < config.pool_limits.get(FakeTensorRT.MemoryPoolType.WORKSPACE, 0) <= 4 << 30, config.pool_limits
            (profile,) = config.profiles
            names = [v.name for v in network.onnx.graph.input]
            assert sorted(profile.shapes) == sorted(names), "every input needs a profile shape"
            for name, (low, opt, high) in profile.shapes.items():
                assert len(low) == len(opt) == len(high) == len(dims(next(v for v in network.onnx.graph.input if v.name == name)))
                assert all(a <= b <= c for a, b, c in zip(low, opt, high)), name
            FakeTensorRT.builds += 1
            header = json.dumps({n: [list(s) for s in shapes] for n, shapes in profile.shapes.items()}).encode()
            return len(header).to_bytes(8, "little") + header + network.onnx.SerializeToString()

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, data):
            proto = onnx.load_model_from_string(bytes(data))
            bad = sorted({n.op_type for n in proto.graph.node} & FakeTensorRT.unsupported)
            if bad:
                self.errors.append(SimpleNamespace(desc=lambda: f"No importer registered for op: {bad[0]}"))
                return False
            inputs = list(proto.graph.input)
            self.network.onnx, self.network.num_inputs = proto, len(inputs)
            self.network.get_input = lambda k: SimpleNamespace(name=inputs[k].name)
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, k):
            return self.errors[k]

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            size = int.from_bytes(data[:8], "little")
            profile = {n: [tuple(s) for s in shapes] for n, shapes in json.loads(data[8:8 + size]).items()}
            return FakeTensorRT.Engine(onnx.load_model_from_string(data[8 + size:]), profile)

    class Engine:
        TYPES = {1: "FLOAT", 10: "HALF", 9: "BOOL", 6: "INT32", 7: "INT64"}

        def __init__(self, proto, profile):
            self.proto, self.profile, self.session = proto, profile, session(proto)
            self.io = {v.name: v for v in [*proto.graph.input, *proto.graph.output]}
            self.names = list(self.io)
            self.num_io_tensors = len(self.names)

        def get_tensor_name(self, k):
            return self.names[k]

        def get_tensor_mode(self, name):
            return "INPUT" if name in self.profile else "OUTPUT"

        def get_tensor_dtype(self, name):
            return self.TYPES[self.io[name].type.tensor_type.elem_type]

        def create_execution_context(self):
            return FakeTensorRT.Context(self)

    class Context:
        NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "BOOL": np.bool_, "INT32": np.int32, "INT64": np.int64}

        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            low, _, high = self.engine.profile[name]
            ok = len(shape) == len(low) and all(a <= s <= c for a, s, c in zip(low, shape, high))
            if ok:
                self.shapes[name] = tuple(shape)
            return ok

        def set_tensor_address(self, name, address):
            if address % 256:
                return False
            self.addresses[name] = address
            return True

        def get_tensor_shape(self, name):
            sizes = {}
            for n, shape in self.shapes.items():
                sizes.update({d: s for d, s in zip(dims(self.engine.io[n]), shape) if isinstance(d, str)})
            return tuple(sizes.get(d, -1) if isinstance(d, str) else d for d in dims(self.engine.io[name]))

        def _array(self, name, shape):
            dtype = np.dtype(self.NUMPY[self.engine.get_tensor_dtype(name)])
            raw = (ctypes.c_uint8 * (int(np.prod(shape)) * dtype.itemsize)).from_address(self.addresses[name])
            return np.frombuffer(raw, dtype=dtype).reshape(shape)

        def execute_async_v3(self, stream_handle):
            assert isinstance(stream_handle, int) and stream_handle != 0, "not on the legacy default stream"
            inputs = [n for n in self.engine.names if n in self.engine.profile]
            assert all(n in self.shapes and n in self.addresses for n in inputs), "every input needs a shape and an address"
            feed = {n: self._array(n, self.shapes[n]).copy() for n in inputs}
            outputs = [n for n in self.engine.names if n not in self.engine.profile]
            for name, value in zip(outputs, self.engine.session.run(outputs, feed)):
                assert name in self.addresses, f"{name} has no address"
                self._array(name, self.get_tensor_shape(name))[...] = value
            return True


class FakeStream(SimpleNamespace):
    def __init__(self, handle):
        super().__init__(cuda_stream=handle)

    def wait_stream(self, other):
        assert isinstance(other, FakeStream) and other is not self


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path, fp32_exports):
    """TensorRT importable and a "GPU" that is the CPU: the stand-in above, torch's CUDA calls that the
    code makes answered for a device that is the CPU, a fresh cache, and exports reused."""
    monkeypatch.setattr(tensorrt_runtime, "trt", FakeTensorRT)
    monkeypatch.setattr(tensorrt_runtime, "HAS_TENSORRT", True)
    monkeypatch.setattr(tensorrt_runtime, "cuda_device", lambda device=None: torch.device("cpu"))
    monkeypatch.setattr(tensorrt_runtime, "_LOGGER", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU 80GB")
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream(0))
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: FakeStream(0x5EED))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (60 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setenv("SSMP_INFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(FakeTensorRT, "builds", 0)
    _reuse_fp32_export(monkeypatch, fp32_exports)
    return fp32_exports


def test_build_writes_one_engine_per_graph_and_a_description(fake_gpu, tmp_path):
    model, _ = fake_gpu["prefix"]
    profiles = Profiles(batch=(1, 2, 4), shots=(1, 50, 300), slots=(1, 8, 32))
    paths = export_tensorrt(model, tmp_path / "engines", profiles=profiles)
    assert sorted(paths) == ["prepare", "step"] and FakeTensorRT.builds == 2
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == ["engines.json", "prepare.engine", "step.engine"]
    meta = json.loads((tmp_path / "engines" / "engines.json").read_text())
    assert meta["weights_sha256"] == weights_sha256(model) and meta["model_config"] == model.cfg.to_dict()
    assert (meta["gpu"], meta["tensorrt"], meta["precision"]) == ("Fake GPU 80GB", FakeTensorRT.__version__, "fp16")
    assert Profiles.from_dict(meta["profiles"]) == profiles


def test_build_refuses_to_overwrite_without_force_and_checks_every_file_first(fake_gpu, tmp_path):
    model, _ = fake_gpu["prefix"]
    out = tmp_path / "engines"
    out.mkdir()
    (out / "step.engine").write_bytes(b"theirs")
    with pytest.raises(InputError, match="step.engine already exists; pass --force"):
        build_engines(model, out)
    assert sorted(p.name for p in out.iterdir()) == ["step.engine"] and FakeTensorRT.builds == 0
    build_engines(model, out, force=True)
    assert (out / "step.engine").read_bytes() != b"theirs"


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_other_precisions_are_one_sentence(fake_gpu, tmp_path, precision):
    with pytest.raises(InputError, match=f"fp16 only, not '{precision}'"):
        build_engines(fake_gpu["prefix"][0], tmp_path, precision=precision)


def test_a_graph_the_parser_rejects_is_one_sentence_with_its_first_error(fake_gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(FakeTensorRT, "unsupported", {"LayerNormalization"})
    with pytest.raises(InputError, match="cannot read the prepare graph: No importer registered for op: LayerNormalization"):
        build_engines(fake_gpu["prefix"][0], tmp_path)
    assert not (tmp_path / "engines.json").exists()


def _compare_with_torch(backend, model, lengths, J, seed, refresh_every=None, rounds=2):
    ref = TorchBackend(model)
    movie, movie_valid, slots, slot_masked, slot_valid = padded_batch(lengths, J, seed)
    want, got = ref.prepare(movie, movie_valid, refresh_every), backend.prepare(movie, movie_valid, refresh_every)
    if model.cfg.movie_attention == "prefix":
        valid = movie_valid[None, :, None, :, None]
        assert_close(got.cache.keys * valid, torch.stack(want.cache.keys) * valid, **FP16)
        assert_close(got.shot_prior[movie_valid], want.shot_prior[movie_valid], **FP16)
    for round_ in range(rounds):
        masked = slot_masked ^ (torch.arange(J) < round_)
        pred = backend.step(got, slots, masked, slot_valid)
        assert pred.dtype == torch.float32 and pred.shape == slots.shape
        assert_close(pred[slot_valid], ref.step(want, slots, masked, slot_valid)[slot_valid], **FP16)
    return got


@pytest.mark.parametrize("attention,refresh_every", [("prefix", None), ("full", 1), ("full", 2)])
def test_backend_matches_torch_with_the_onnxruntime_backends_rules(fake_gpu, tmp_path, attention, refresh_every):
    model, _ = fake_gpu[attention]
    backend = TensorRTBackend(cached_engine_dir(model, "cuda"), "cuda", weights_sha256=weights_sha256(model))
    assert backend.name == "tensorrt" and sorted(backend.runners) == sorted(graph_names(model.cfg))
    state = _compare_with_torch(backend, model, [40, 17, 29], 11, seed=5, refresh_every=refresh_every, rounds=3)
    if attention == "prefix":
        assert state.refresh_every == 0 and state.cache is not None
        rows = torch.tensor([2, 0])  # finished movies leave: the cache's batch is its dim 1
        assert state.select(rows).cache.keys.shape[1] == 2
    else:
        assert (state.cache is None) == (refresh_every == 1)


def test_an_engine_of_a_model_with_the_presets_priors_matches_torch(fake_gpu, tmp_path):
    """The context branch with its local read, and the position keys (the shot_keys graph): built as the
    bundled models' engines are, fp16, and within fp16's error of torch, keys included."""
    model, _ = fake_gpu["presets"]
    out = tmp_path / "engines"
    build_engines(model, out, profiles=Profiles(batch=(1, 2, 4), shots=(1, 32, 64), slots=(1, 8, 16)))
    backend = TensorRTBackend(out, "cuda", weights_sha256=weights_sha256(model))
    assert sorted(backend.runners) == ["prepare", "shot_keys", "step"]
    movie, movie_valid, *_ = padded_batch([40, 17, 29], 11, seed=8)
    got, want = backend.prepare(movie, movie_valid), TorchBackend(model).prepare(movie, movie_valid)
    assert want.shot_keys is not None and (want.shot_prior[movie_valid].std() > 0.1)  # both priors at work
    assert_close(got.shot_keys[movie_valid], want.shot_keys[movie_valid], **FP16)
    _compare_with_torch(backend, model, [40, 17, 29], 11, seed=8, rounds=3)


def test_a_batch_above_the_profile_runs_in_chunks(fake_gpu, tmp_path):
    model, _ = fake_gpu["prefix"]
    out = tmp_path / "small-batch"
    build_engines(model, out, profiles=Profiles(batch=(1, 2, 2), shots=(1, 32, 64), slots=(1, 8, 16)))
    _compare_with_torch(TensorRTBackend(out, "cuda"), model, [40, 17, 29, 33, 8], 11, seed=6)


def test_movies_and_trailers_outside_the_profile_are_one_sentence(fake_gpu, tmp_path):
    model, _ = fake_gpu["prefix"]
    out = tmp_path / "engines"
    build_engines(model, out, profiles=Profiles(batch=(1, 2, 4), shots=(1, 32, 64), slots=(2, 8, 16)))
    backend = TensorRTBackend(out, "cuda")
    movie, movie_valid, slots, slot_masked, slot_valid = padded_batch([65, 30], 8, seed=1)
    with pytest.raises(InputError, match=r"a movie of 65 shots is outside the 1\.\.64 shots .* --max-shots N"):
        backend.prepare(movie, movie_valid)
    state = backend.prepare(movie[:, :64], movie_valid[:, :64])
    for J in (17, 1):
        with pytest.raises(InputError, match=f"a trailer of {J} slots is outside the 2..16 slots"):
            backend.step(state, slots[:, :1].expand(-1, J, -1), slot_masked[:, :1].expand(-1, J), slot_valid[:, :1].expand(-1, J))


def test_engines_of_other_weights_gpus_or_tensorrt_versions_are_refused(fake_gpu, tmp_path, monkeypatch):
    model, _ = fake_gpu["prefix"]
    out = tmp_path / "engines"
    build_engines(model, out, profiles=Profiles(shots=(1, 32, 64), slots=(1, 8, 16)))
    with pytest.raises(InputError, match="built from other weights"):
        TensorRTBackend(out, "cuda", weights_sha256="0" * 64)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Another GPU")
    with pytest.raises(InputError, match="built for a Fake GPU 80GB, not this Another GPU"):
        TensorRTBackend(out, "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU 80GB")
    monkeypatch.setattr(FakeTensorRT, "__version__", "10.98.0")
    with pytest.raises(InputError, match="built with TensorRT 10.99.0.fake, this is 10.98.0"):
        TensorRTBackend(out, "cuda")
    (out / "engines.json").unlink()
    with pytest.raises(InputError, match="no TensorRT engines in"):
        TensorRTBackend(out, "cuda")


def test_the_engine_cache_builds_once_and_is_reused(fake_gpu):
    model, _ = fake_gpu["prefix"]
    first = cached_engine_dir(model, "cuda")
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.iterdir()}
    assert FakeTensorRT.builds == 2 and first.parent == Path(os.environ["SSMP_INFER_CACHE"]) / "tensorrt"
    again = TensorRTBackend.for_model(model, "cuda")
    assert again.engine_dir == first and FakeTensorRT.builds == 2
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.iterdir()} == stamps
    other = cached_engine_dir(model, "cuda", profiles=Profiles(shots=(1, 100, 200)))
    assert other != first and FakeTensorRT.builds == 4  # another profile is another build
    assert sorted(p.name for p in first.parent.iterdir()) == sorted([first.name, other.name])  # no leftovers


def test_a_whole_trailer_through_the_backend(fake_gpu):
    model, _ = fake_gpu["prefix"]
    backend = TensorRTBackend.for_model(model, "cuda")
    features = np.random.default_rng(4).standard_normal((90, D)).astype(np.float32)
    config = DecodeConfig(mode="topk", seed=3)
    got = Engine(model.cfg, backend).generate(features, length=12, decode=config)
    want = Engine(model.cfg, TorchBackend(model)).generate(features, length=12, decode=config)
    assert got.backend == "tensorrt" and len(set(got.shots)) == 12
    assert got.shots == want.shots  # fp16 moves no choice on this movie (measured), so the trailer is the same


# ------------------------------------------------------------------------- TensorRT and a CUDA GPU

SMALL = Profiles(batch=(1, 2, 4), shots=(1, 643, 1024), slots=(1, 24, 64))


@pytest.fixture(scope="module")
def bundled_engines(tmp_path_factory):
    """The bundled model's engines, built into a fresh cache with a small profile (builds in minutes)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSMP_INFER_CACHE", str(tmp_path_factory.mktemp("cache")))
        model, _ = load_checkpoint(device="cuda")
        return model, cached_engine_dir(model, "cuda", profiles=SMALL)


@pytest.mark.skipif(not GPU, reason="needs tensorrt and a CUDA GPU")
def test_gpu_engines_match_torch_on_a_padded_batch(bundled_engines):
    model, engines = bundled_engines
    backend, ref = TensorRTBackend(engines, "cuda", weights_sha256(model)), TorchBackend(model, "cuda")
    features = torch.from_numpy(np.load(EXAMPLE)).float().cuda()
    movie = torch.zeros(2, features.shape[0], features.shape[1], device="cuda")
    movie[0], movie[1, :300] = features, features[100:400]
    movie_valid = (movie != 0).any(-1)
    g = torch.Generator(device="cuda").manual_seed(0)
    slots = movie[:, :24] * 2.0
    slot_masked = torch.rand(2, 24, device="cuda", generator=g) < 0.5
    slot_valid = torch.arange(24, device="cuda")[None] < torch.tensor([[24], [10]], device="cuda")
    want, got = ref.prepare(movie, movie_valid), backend.prepare(movie, movie_valid)
    valid = movie_valid[None, :, None, :, None]
    assert_close((got.cache.keys * valid).cpu(), (torch.stack(want.cache.keys) * valid).cpu(), **FP16)
    assert_close((got.cache.values * valid).cpu(), (torch.stack(want.cache.values) * valid).cpu(), **FP16)
    assert_close(got.shot_prior[movie_valid].cpu(), want.shot_prior[movie_valid].cpu(), **FP16)
    assert torch.equal(torch.isinf(got.shot_prior), ~movie_valid)
    pred = backend.step(got, slots, slot_masked, slot_valid)
    assert_close(pred[slot_valid].cpu(), ref.step(want, slots, slot_masked, slot_valid)[slot_valid].cpu(), **FP16)


@pytest.mark.skipif(not GPU, reason="needs tensorrt and a CUDA GPU")
def test_gpu_whole_trailer_and_the_limits(bundled_engines):
    model, engines = bundled_engines
    backend = TensorRTBackend(engines, "cuda", weights_sha256(model))
    features = np.load(EXAMPLE)
    config = DecodeConfig(mode="topk", seed=11)
    got = Engine(model.cfg, backend).generate(features, decode=config)
    want = Engine(model.cfg, TorchBackend(model, "cuda")).generate(features, decode=config)
    assert got.backend == "tensorrt" and len(got.shots) == len(set(got.shots)) == want.length
    assert len(set(got.shots) & set(want.shots)) >= 0.9 * want.length  # fp16 may move a near tie, not the trailer
    too_long = torch.randn(1, SMALL.shots[2] + 1, model.cfg.feature_dim, device="cuda")
    with pytest.raises(InputError, match=f"outside the 1..{SMALL.shots[2]} shots"):
        backend.prepare(too_long, torch.ones(too_long.shape[:2], dtype=torch.bool, device="cuda"))


@pytest.mark.skipif(not GPU, reason="needs tensorrt and a CUDA GPU")
def test_gpu_engine_cache_is_reused(bundled_engines, monkeypatch):
    model, engines = bundled_engines
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in engines.iterdir()}
    monkeypatch.setenv("SSMP_INFER_CACHE", str(engines.parent.parent))
    monkeypatch.setattr(trt_export, "build_engines", lambda *a, **k: pytest.fail("the cached engines were rebuilt"))
    assert cached_engine_dir(model, "cuda", profiles=SMALL) == engines
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in engines.iterdir()} == stamps
