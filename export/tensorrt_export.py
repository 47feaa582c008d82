"""TensorRT engines built from the encoder's ONNX graphs (`onnx_export`), one per graph.

    prepare.engine + step.engine (prefix attention) or full.engine + step.engine, and engines.json

Each engine comes from an opset-18 export (`TENSORRT_OPSET`) converted to fp16 (`fp16_graph`): the
weights and the arithmetic are fp16, while the graph's inputs and outputs keep the fp32/bool interface
of the ONNX Runtime files, so the backends are interchangeable. The network is strongly typed: the
builder runs every tensor in the type the graph gives it instead of choosing precisions itself, so
what was measured on the fp16 graph is what the engine computes.

An engine covers the shapes of its one optimisation profile (`Profiles`: min/opt/max of the batch,
the movie's shots and the trailer's slots) and runs only on the GPU model and the TensorRT version it
was built with. engines.json records all of that with the model config and weights hash, and the
backend (`ssmp_infer.backends.tensorrt_backend`) refuses engines that do not fit in one sentence.

Nothing here imports TensorRT before it is needed: the profiles, the cache key and the fp16 graphs
work (and are tested) on machines without it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ssmp_infer.atomic import write_atomic
from ssmp_infer.config import ModelConfig
from ssmp_infer.errors import InputError

from . import tensorrt_runtime as rt
from .onnx_export import (
    _require_onnx, cache_entry, cache_root, export_onnx, graph_names, refuse_existing, weights_sha256,
)

# Opset 18 writes attention as MatMul/Softmax, which TensorRT's builder fuses into its own attention
# kernels; opset 23's Attention op (what the ONNX Runtime files use) is not what this path is built on.
TENSORRT_OPSET = 18
ENGINE_FORMAT = "ssmp-infer-tensorrt/1"  # bump when engines.json or the engines' inputs change
ENGINES_JSON = "engines.json"
PRECISIONS = ("fp16",)
META_PRECISION = "ssmp_infer.precision"  # the key onnx_export writes its precision under

# The dims of every graph input, as onnx_export's `_signature` writes them: B, I, J are the profile's
# batch, shots and slots; D, L, H, hd are the model's.
INPUT_DIMS = {
    "movie": ("B", "I", "D"),
    "movie_valid": ("B", "I"),
    "keys": ("L", "B", "H", "I", "hd"),
    "values": ("L", "B", "H", "I", "hd"),
    "slots": ("B", "J", "D"),
    "slot_masked": ("B", "J"),
    "slot_valid": ("B", "J"),
}
GRAPH_INPUTS = {
    "prepare": ("movie", "movie_valid"),
    "step": ("keys", "values", "movie_valid", "slots", "slot_masked", "slot_valid"),
    "full": ("movie", "movie_valid", "slots", "slot_masked", "slot_valid"),
    "shot_keys": ("movie", "movie_valid"),
}


@dataclass(frozen=True)
class Profiles:
    """(min, opt, max) of the batch, the movie's shots and the trailer's slots an engine is built for.

    TensorRT picks its kernels for `opt`; the defaults are the CMTD means (1909 shots per movie, 71 per
    trailer) and cover movies up to 8192 shots and trailers up to 256 slots. A bigger max costs build
    time and the context's device memory, which TensorRT sizes for it.
    """

    batch: tuple[int, int, int] = (1, 4, 8)
    shots: tuple[int, int, int] = (1, 1909, 8192)
    slots: tuple[int, int, int] = (1, 71, 256)

    def __post_init__(self):
        for name in ("batch", "shots", "slots"):
            value = getattr(self, name)
            ok = isinstance(value, (tuple, list)) and len(value) == 3
            ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            if not ok or not 1 <= value[0] <= value[1] <= value[2]:
                raise InputError(
                    f"the TensorRT {name} profile must be three integers 1 <= min <= opt <= max, got {value!r}"
                )
            object.__setattr__(self, name, tuple(value))  # lists (from JSON) become tuples: hashable, comparable

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Profiles":
        if not isinstance(d, dict) or set(d) != {"batch", "shots", "slots"}:
            raise InputError(f"a TensorRT profile needs batch, shots and slots, got {d!r}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def input_profile_shapes(cfg: ModelConfig, graph: str, profiles: Profiles) -> dict[str, tuple[tuple[int, ...], ...]]:
    """{input name: (min shape, opt shape, max shape)} for every input of one graph."""
    fixed = {"D": cfg.feature_dim, "L": cfg.n_layers, "H": cfg.n_heads, "hd": cfg.head_dim}
    varying = {"B": profiles.batch, "I": profiles.shots, "J": profiles.slots}

    def shape(name: str, which: int) -> tuple[int, ...]:
        return tuple(varying[d][which] if d in varying else fixed[d] for d in INPUT_DIMS[name])

    return {name: tuple(shape(name, which) for which in range(3)) for name in GRAPH_INPUTS[graph]}


# ----------------------------------------------------------------------------------------- fp16 graphs

# Kept in fp32 on purpose (input cast up, output cast down). A strongly typed network computes each
# layer in its input's type, and TensorRT itself warns that a LayerNorm after self-attention may
# overflow in fp16: its statistics square the residual stream. The casts cost two elementwise passes
# over (B, T, d_model) per norm, little next to the attention.
FP32_OPS = ("LayerNormalization",)
# Graph inputs the fp32 input side starts from (keys and values are the model's own fp16 states).
INPUT_SIDE_SEEDS = ("movie", "movie_valid", "slots", "slot_masked", "slot_valid")


def input_side_nodes(graph) -> set[str]:
    """Names of the nodes that compute from the graph's inputs alone, before any MatMul: the L2
    normalisation of the features, the position features of the valid masks and the attention masks.

    They stay fp32 because fp16 cannot hold them: it counts exactly only to 2048 (shot 8191 becomes
    8192), so the sin/cos of a long movie's shot indices come out wrong and index / length is no finer
    than the index; and a raw slot feature's sum of squares can overflow. Measured on a 2600-shot movie:
    keys off by ~0.1 with these in fp16, ~1e-3 without (tests/test_tensorrt.py). They are elementwise
    and cheap; everything from the first matrix product on is fp16.
    """
    initializers = {t.name for t in graph.initializer}
    inside = {i.name for i in graph.input if i.name in INPUT_SIDE_SEEDS}
    names = set()
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type in ("MatMul", "Gemm"):
            continue
        ins = [i for i in node.input if i]
        if ins and all(i in inside or i in initializers for i in ins):
            names.add(node.name)
            inside.update(node.output)
    return names


def fp16_graph(proto):
    """The fp32 ONNX graph `proto` with fp16 weights and arithmetic, and the same fp32/bool inputs and
    outputs, symbolic dims and metadata (plus the precision). Left fp32: the input side
    (`input_side_nodes`), the ops in `FP32_OPS` and the converter's own block list (CumSum, Range, ...),
    with the float constants and weights only they read (the LayerNorms' scales and shifts)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError:
        raise InputError(
            "building fp16 TensorRT engines needs onnxruntime (its fp16 graph converter), which is not installed: "
            "pip install 'ssmp-infer[onnx]'"
        ) from None
    metadata = [(p.key, p.value) for p in proto.metadata_props]
    proto = copy.deepcopy(proto)
    kept = input_side_nodes(proto.graph)
    converted = convert_float_to_float16(
        proto,
        keep_io_types=True,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS),
        node_block_list=sorted(kept),
    )
    # The converter appends its casts at the end of the node list and leaves value_info it no longer
    # agrees with: sort the nodes again, and infer the types afresh after each rewrite.
    del converted.graph.value_info[:]
    _sort_topologically(converted.graph)
    _drop_cast_round_trips(converted)
    converted = onnx.shape_inference.infer_shapes(converted, strict_mode=True)
    del converted.metadata_props[:]  # as exported (whatever the converter kept), the precision now fp16
    for key, value in {**dict(metadata), META_PRECISION: "fp16"}.items():
        converted.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(converted, full_check=True)
    return converted


def _drop_cast_round_trips(model) -> None:
    """Feed fp32 consumers the fp32 tensor itself where the converter wrote fp32 -> fp16 -> fp32 (or a
    cast of fp32 to fp32).

    The converter casts every output of an fp32 node down to fp16 and casts it up again for the next
    fp32 node (and every fp32 graph input down first): between two fp32 nodes the value would pass
    through fp16 and lose what keeping them fp32 was for. Casts left without consumers are removed.
    """
    import onnx

    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    graph = model.graph
    float32 = _float32_tensors(model)
    producer = {out: node for node in graph.node for out in node.output}

    def cast_to(node) -> int | None:
        if node is None or node.op_type != "Cast":
            return None
        return next(a.i for a in node.attribute if a.name == "to")

    for node in graph.node:
        for k, name in enumerate(node.input):
            up = producer.get(name)
            if cast_to(up) != FLOAT:
                continue
            if up.input[0] in float32:  # a cast of fp32 to fp32 (of a weight only fp32 nodes read)
                node.input[k] = up.input[0]
                continue
            down = producer.get(up.input[0])
            if cast_to(down) == FLOAT16 and down.input[0] in float32:
                node.input[k] = down.input[0]
    outputs = {o.name for o in graph.output}
    while True:  # remove casts nobody reads any more (a removed one can orphan the cast before it)
        read = {i for node in graph.node for i in node.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in read for o in n.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def _sort_topologically(graph) -> None:
    """Reorder `graph.node` so that every node comes after the nodes whose outputs it reads (stable:
    nodes already in order keep it)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(range(len(graph.node))), []
    while pending:
        waiting = []
        for k in pending:
            if all(i in available for i in graph.node[k].input):
                ordered.append(k)
                available.update(graph.node[k].output)
            else:
                waiting.append(k)
        if len(waiting) == len(pending):
            raise ValueError("the fp16 graph reads a tensor that no node produces")
        pending = waiting
    nodes = [copy.deepcopy(graph.node[k]) for k in ordered]
    del graph.node[:]
    graph.node.extend(nodes)


def _float32_tensors(model) -> set[str]:
    import onnx

    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    return {
        v.name for v in [*inferred.input, *inferred.value_info, *inferred.output]
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    } | {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}


def export_fp16_onnx(model, out_dir: str | Path, force: bool = False) -> dict[str, Path]:
    """Write the model's graphs as `<graph>.fp16.onnx` (opset `TENSORRT_OPSET`, see `fp16_graph`) into
    `out_dir`; {graph: path}. What the engines are built from; needs onnx and onnxruntime, not TensorRT."""
    import onnx

    _require_onnx()
    out_dir = Path(out_dir)
    paths = {g: out_dir / f"{g}.fp16.onnx" for g in graph_names(model.cfg)}
    refuse_existing(out_dir, paths.values(), force)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ssmp-fp32-") as tmp:
        fp32 = export_onnx(model, tmp, force=True, opset=TENSORRT_OPSET)
        for graph, path in paths.items():
            converted = fp16_graph(onnx.load_model(str(fp32[graph])))
            _write_atomic(path, converted.SerializeToString())
    return paths


def _write_atomic(path: Path, data) -> None:
    """`data` (bytes or a buffer) into `path` through a temporary file: a reader never sees half of it.
    (The caller has already refused what must not be overwritten.)"""
    write_atomic(path, lambda tmp: Path(tmp).write_bytes(data), force=True)


# ----------------------------------------------------------------------------------------- engines


def engine_cache_key(
    weights_sha256: str,
    gpu_name: str,
    tensorrt_version: str,
    precision: str,
    profiles: Profiles,
    model_config: dict | None = None,
) -> str:
    """A stable name for one build: everything an engine depends on, hashed. The model config is part of
    it because the same weights under another attention make other graphs."""
    identity = {
        "format": ENGINE_FORMAT,
        "weights_sha256": weights_sha256,
        "gpu": gpu_name,
        "tensorrt": tensorrt_version,
        "precision": precision,
        "profiles": profiles.to_dict(),
        "model_config": model_config,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def engine_cache_dir(key: str) -> Path:
    return cache_root() / "tensorrt" / key


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"TensorRT engines are built in {' or '.join(PRECISIONS)} only, not {precision!r}")


def export_tensorrt(model, out_dir: str | Path, force: bool = False, precision: str = "fp16",
                    profiles: Profiles | None = None, device=None) -> dict[str, Path]:
    """`ssmp-infer export --format tensorrt`: the engines of `model` for this GPU in `out_dir`;
    {graph: engine path} (engines.json beside them). Without TensorRT or a GPU: one sentence."""
    rt.require_tensorrt()
    return build_engines(model, out_dir, profiles=profiles, precision=precision, force=force, device=device)


def build_engines(model, out_dir: str | Path, profiles: Profiles | None = None, precision: str = "fp16",
                  force: bool = False, device=None) -> dict[str, Path]:
    """Build one engine per graph (`graph_names`) on `device` (default: the current CUDA device) into
    `out_dir` as `<graph>.engine`, and engines.json; {graph: engine path}.

    Existing files are replaced only with `force`, all checked before anything is built. engines.json
    is removed first and written last, so an interrupted rebuild leaves a directory the backend
    refuses, never engines of two builds under one description.
    """
    rt.require_tensorrt()
    check_precision(precision)
    profiles = profiles if profiles is not None else Profiles()
    device = rt.cuda_device(device)
    out_dir = Path(out_dir)
    paths = {g: out_dir / f"{g}.engine" for g in graph_names(model.cfg)}
    description = out_dir / ENGINES_JSON
    refuse_existing(out_dir, [*paths.values(), description], force)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ssmp-fp16-") as tmp:
        graphs = export_fp16_onnx(model, tmp, force=True)
        description.unlink(missing_ok=True)
        with torch.cuda.device(device):  # the builder tunes for, and builds on, the current device
            for graph, path in paths.items():
                shapes = input_profile_shapes(model.cfg, graph, profiles)
                _write_atomic(path, _build_engine(graph, graphs[graph], shapes))
    meta = {
        "format": ENGINE_FORMAT,
        "model_config": model.cfg.to_dict(),
        "weights_sha256": weights_sha256(model),
        "precision": precision,
        "profiles": profiles.to_dict(),
        "gpu": rt.gpu_name(device),
        "tensorrt": rt.trt.__version__,
        "engines": {graph: path.name for graph, path in paths.items()},
    }
    _write_atomic(description, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return paths


WORKSPACE_BYTES = 4 << 30  # the most a build's tactics may use as scratch memory


def workspace_bytes() -> int:
    """WORKSPACE_BYTES, or half the GPU memory free now if that is less."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    return int(min(WORKSPACE_BYTES, free // 2))


def _build_engine(graph: str, onnx_path: Path, shapes: dict):
    """The serialized engine of one fp16 ONNX graph: a strongly typed network, one optimisation profile."""
    logger = rt.trt_logger()
    builder = rt.trt.Builder(logger)
    network = builder.create_network(1 << int(rt.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = rt.trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        first = parser.get_error(0).desc() if parser.num_errors else "no error given"
        raise InputError(f"TensorRT {rt.trt.__version__} cannot read the {graph} graph: {first}")
    names = {network.get_input(k).name for k in range(network.num_inputs)}
    if names != set(shapes):  # a graph whose inputs this file does not know: a bug here, not user input
        raise RuntimeError(f"the {graph} graph has inputs {sorted(names)}, profiles were made for {sorted(shapes)}")
    config = builder.create_builder_config()
    # TensorRT's default workspace is the whole GPU's memory: a build beside a running server could take it all
    config.set_memory_pool_limit(rt.trt.MemoryPoolType.WORKSPACE, workspace_bytes())
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(
            f"TensorRT {rt.trt.__version__} could not build the {graph} engine (its log above says why); "
            "a smaller profile needs less GPU memory"
        )
    return serialized


def read_engine_metadata(directory: str | Path) -> dict:
    """{"config": ModelConfig, "weights_sha256", "precision", "profiles": Profiles, "gpu", "tensorrt",
    "paths": {graph: Path}} of an engine directory, after checking that it is complete."""
    directory = Path(directory)
    description = directory / ENGINES_JSON
    if not description.is_file():
        raise InputError(f"no TensorRT engines in {directory}: expected {ENGINES_JSON} (build them with "
                         "`ssmp-infer export --format tensorrt`)")
    try:
        meta = json.loads(description.read_text(encoding="utf-8"))
        if meta.get("format") != ENGINE_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {ENGINE_FORMAT}")
        config = ModelConfig.from_dict(meta["model_config"])
        profiles = Profiles.from_dict(meta["profiles"])
        paths = {graph: directory / meta["engines"][graph] for graph in graph_names(config)}
        fields = {k: str(meta[k]) for k in ("weights_sha256", "precision", "gpu", "tensorrt")}
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError and InputError are ValueErrors
        raise InputError(f"{description} does not describe engines this version can run ({e}); build them again") from None
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise InputError(f"{directory} lacks {', '.join(missing)}; build the engines again")
    return {"config": config, "profiles": profiles, "paths": paths, **fields}


def cached_engine_dir(model, device=None, profiles: Profiles | None = None, precision: str = "fp16") -> Path:
    """The engines of `model` for this GPU and TensorRT in the cache, built there now if not yet:
    tensorrt/<engine_cache_key> (`onnx_export.cache_entry`: concurrent first uses never mix builds)."""
    rt.require_tensorrt()
    check_precision(precision)
    profiles = profiles if profiles is not None else Profiles()
    device = rt.cuda_device(device)
    key = engine_cache_key(weights_sha256(model), rt.gpu_name(device), rt.trt.__version__, precision, profiles,
                           model.cfg.to_dict())
    return cache_entry(engine_cache_dir(key), read_engine_metadata,
                       lambda tmp: build_engines(model, tmp, profiles=profiles, precision=precision, force=True,
                                                 device=device))
