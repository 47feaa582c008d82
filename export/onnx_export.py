"""The encoder as ONNX graphs that match the backend interface (`ssmp_infer.backends.base`).

    prepare.onnx  movie (B, I, D) f32, movie_valid (B, I) bool
                  -> keys, values (L, B, H, I, hd) f32 [, shot_prior (B, I) f32]   prefix attention only
    step.onnx     keys, values, movie_valid, slots (B, J, D) f32, slot_masked, slot_valid (B, J) bool
                  -> pred (B, J, D) f32
    full.onnx     movie, movie_valid, slots, slot_masked, slot_valid
                  -> pred, keys, values [, shot_prior]                             full attention only
    shot_keys.onnx movie, movie_valid -> shot_keys (B, I, D) f32                   position keys only

B, I and J are the symbolic dims "batch", "shots" and "slots"; everything else (D, L, H, hd) is the
model's. `shot_keys` are the rows a model with position keys scores slots against and feeds to
locked slots (`SSMPEncoder.shot_keys`); they depend on the movie alone, so every backend's `prepare`
runs that graph whatever the model's attention. The J×I scores are not an output: scoring stays in
the decoder. Each file's metadata holds the model config (JSON) and the sha256 of the weights it was exported from, so a backend can refuse
files that belong to another model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmp_infer.config import ModelConfig
from ssmp_infer.errors import InputError
from ssmp_infer.model import MovieCache, SSMPEncoder

# Opset 23 has ONNX's own Attention op: the exporter writes scaled_dot_product_attention as one node,
# which ONNX Runtime runs as one fused kernel (measured on the CPU: the movie pass 1.6x and a step
# 1.8x faster than opset 18's MatMul/Softmax chain). TensorRT's engines are built from opset-18 files
# (`TENSORRT_OPSET` in tensorrt_export.py), whose MatMul/Softmax chain its builder fuses itself.
OPSET = 23
FORMAT = "ssmp-infer-onnx/3"  # bump when the graphs' inputs or outputs change: cached exports are redone
BATCH, SHOTS, SLOTS = "batch", "shots", "slots"
META_FORMAT, META_GRAPH, META_CONFIG, META_WEIGHTS, META_PRECISION = (
    "ssmp_infer.format", "ssmp_infer.graph", "ssmp_infer.model_config", "ssmp_infer.weights_sha256", "ssmp_infer.precision",
)
# fp32: the model as trained. int8: ONNX Runtime's dynamic quantisation of the same graphs (the weights
# of every linear layer int8 per output channel, their inputs quantised on the fly; attention, the
# LayerNorms and the normalisations stay float32), for CPUs.
ONNX_PRECISIONS = ("fp32", "int8")


class PrepareGraph(nn.Module):
    """`SSMPEncoder.prepare` with the per-layer states stacked: one tensor per kind, layer first."""

    def __init__(self, model: SSMPEncoder):
        super().__init__()
        self.model = model

    def forward(self, movie, movie_valid):
        states = self.model.prepare(movie, movie_valid)
        keys, values = torch.stack(states.keys), torch.stack(states.values)  # (L, B, H, I, hd)
        return (keys, values) if states.shot_prior is None else (keys, values, states.shot_prior)


class StepGraph(nn.Module):
    """`SSMPEncoder.step` reading the stacked states."""

    def __init__(self, model: SSMPEncoder):
        super().__init__()
        self.model = model

    def forward(self, keys, values, movie_valid, slots, slot_masked, slot_valid):
        states = MovieCache(list(keys.unbind(0)), list(values.unbind(0)), movie_valid)
        return self.model.step(states, slots, slot_masked, slot_valid)


class FullGraph(nn.Module):
    """`SSMPEncoder.forward_with_states`: one pass over [movie ; slots], and the movie's states."""

    def __init__(self, model: SSMPEncoder):
        super().__init__()
        self.model = model

    def forward(self, movie, movie_valid, slots, slot_masked, slot_valid):
        pred, states = self.model.forward_with_states(movie, movie_valid, slots, slot_masked, slot_valid)
        keys, values = torch.stack(states.keys), torch.stack(states.values)
        return (pred, keys, values) if states.shot_prior is None else (pred, keys, values, states.shot_prior)


class ShotKeysGraph(nn.Module):
    """`SSMPEncoder.shot_keys` of the unit movie."""

    def __init__(self, model: SSMPEncoder):
        super().__init__()
        self.model = model

    def forward(self, movie, movie_valid):
        return self.model.shot_keys(F.normalize(movie.float(), dim=-1), movie_valid)


def graph_names(cfg: ModelConfig) -> tuple[str, ...]:
    """The graphs a model needs: prepare + step under prefix attention, full + step under full attention
    (step then reuses stale states when the caller asks for `refresh_every` > 1); shot_keys with
    position keys."""
    names = ("prepare", "step") if cfg.movie_attention == "prefix" else ("full", "step")
    return names + (("shot_keys",) if cfg.position_keys else ())


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes, in name order): the same weights give the
    same hash whatever file they were loaded from."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _signature(cfg: ModelConfig, graph: str):
    """(wrapper class, input names, output names, example inputs, dynamic shapes) of one graph.

    The example sizes are all different and above 1 so that no dim can be mistaken for another or
    specialised to a constant by the exporter.
    """
    B, I, J, D = 2, 7, 5, cfg.feature_dim
    L, H, hd = cfg.n_layers, cfg.n_heads, cfg.head_dim
    batch, shots, slots = torch.export.Dim(BATCH), torch.export.Dim(SHOTS), torch.export.Dim(SLOTS)
    gen = torch.Generator().manual_seed(0)  # not the global generator: exporting changes no caller's draws
    randn = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    valid_i = torch.ones(B, I, dtype=torch.bool)
    valid_i[1, I - 2 :] = False
    valid_j = torch.ones(B, J, dtype=torch.bool)
    valid_j[0, J - 1 :] = False
    masked_j = torch.zeros(B, J, dtype=torch.bool)
    masked_j[:, ::2] = True
    movie = {"movie": (randn(B, I, D), {0: batch, 1: shots}), "movie_valid": (valid_i, {0: batch, 1: shots})}
    slot = {
        "slots": (randn(B, J, D), {0: batch, 1: slots}),
        "slot_masked": (masked_j, {0: batch, 1: slots}),
        "slot_valid": (valid_j, {0: batch, 1: slots}),
    }
    states = {
        "keys": (randn(L, B, H, I, hd), {1: batch, 3: shots}),
        "values": (randn(L, B, H, I, hd), {1: batch, 3: shots}),
        "movie_valid": (valid_i, {0: batch, 1: shots}),
    }
    prior = ("shot_prior",) if cfg.shot_prior else ()
    if graph == "prepare":
        return PrepareGraph, movie, ("keys", "values") + prior
    if graph == "step":
        return StepGraph, {**states, **slot}, ("pred",)
    if graph == "shot_keys":
        return ShotKeysGraph, movie, ("shot_keys",)
    return FullGraph, {**movie, **slot}, ("pred", "keys", "values") + prior


def _export_graph(model: SSMPEncoder, graph: str, path: Path, metadata: dict[str, str], opset: int) -> None:
    import onnx

    wrapper, inputs, outputs = _signature(model.cfg, graph)
    args = tuple(example for example, _ in inputs.values())
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed" notes, irrelevant here
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's progress chatter and deprecation notes
            program = torch.onnx.export(
                wrapper(model).eval(),
                args,
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_shapes={name: dims for name, (_, dims) in inputs.items()},
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    proto = program.model_proto
    for key, value in {**metadata, META_GRAPH: graph}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path))


def export_onnx(
    model: SSMPEncoder, out_dir: str | Path, force: bool = False, opset: int = OPSET, precision: str = "fp32"
) -> dict[str, Path]:
    """Write the model's graphs (see `graph_names`) into `out_dir`; {graph: path}.

    `precision` "int8" writes the graphs dynamically quantised (see ONNX_PRECISIONS).
    `opset` 17-22 writes attention as MatMul/Softmax (for runtimes without opset 23's Attention op).

    An existing graph file is replaced only with `force`; every file is written to a temporary name
    first, so a reader never sees half a graph.
    """
    _require_onnx()
    if precision not in ONNX_PRECISIONS:
        raise InputError(f"ONNX graphs are written in {' or '.join(ONNX_PRECISIONS)}, not {precision!r}")
    out_dir = Path(out_dir)
    paths = {name: out_dir / f"{name}.onnx" for name in graph_names(model.cfg)}
    refuse_existing(out_dir, paths.values(), force)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).to("cpu").eval()  # the caller's model stays where and as it was
    metadata = {
        META_FORMAT: FORMAT,
        META_CONFIG: json.dumps(model.cfg.to_dict(), sort_keys=True),
        META_WEIGHTS: weights_sha256(model),
        META_PRECISION: precision,
    }
    for name, path in paths.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out_dir)
        os.close(fd)
        try:
            _export_graph(model, name, Path(tmp), metadata, opset)
            if precision == "int8":
                _quantize_int8(Path(tmp))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return paths


def _quantize_int8(path: Path) -> None:
    """Replace the fp32 graph at `path` by its dynamically quantised int8 version (metadata kept).

    Only MatMul is quantised: left to its defaults the quantiser also rewrites opset 23's Attention
    node into a contrib QAttention that rejects the node's attributes (ORT 1.32), and attention is
    better kept float32 anyway (its operands are activations, not weights).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantised = path.with_name(path.name + ".int8")
    quant_log = logging.getLogger()  # the quantiser advises "pre-processing" on the root logger
    level = quant_log.level
    quant_log.setLevel(logging.ERROR)
    try:
        quantize_dynamic(path, quantised, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    finally:
        quant_log.setLevel(level)
    os.replace(quantised, path)


def refuse_existing(out_dir: Path, paths, force: bool) -> None:
    """Every output checked before any is written: an existing one is replaced only with `force`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a directory")
    for path in paths:
        if path.exists() and not force:
            raise InputError(f"{path} already exists; pass --force to overwrite it")


def read_metadata(directory: str | Path) -> dict:
    """{"config": ModelConfig, "weights_sha256": str, "precision": str, "paths": {graph: Path}} of an export directory,
    after checking that every graph the config needs is there and all agree on format and weights."""
    _require_onnx(exporting=False)
    import onnx

    from google.protobuf.message import DecodeError

    directory = Path(directory)
    if not any((directory / f"{g}.onnx").is_file() for g in ("prepare", "full")):
        raise InputError(f"no ONNX export in {directory}: expected prepare.onnx or full.onnx (write one with `ssmp-infer export`)")
    seen = None
    paths = {}
    for graph in ("prepare", "full", "step", "shot_keys"):
        path = directory / f"{graph}.onnx"
        if not path.is_file():
            continue
        try:  # the whole file is parsed (the metadata sits after the graph); these models are small
            props = {p.key: p.value for p in onnx.load_model(str(path), load_external_data=False).metadata_props}
        except (DecodeError, ValueError) as e:
            raise InputError(f"{path} is not a readable ONNX file ({e}); export it again") from None
        if props.get(META_FORMAT) != FORMAT:
            raise InputError(f"{path} is not an {FORMAT} export (format {props.get(META_FORMAT)!r}); export it again")
        mine = (props.get(META_CONFIG), props.get(META_WEIGHTS), props.get(META_PRECISION, "fp32"))
        if seen is not None and mine != seen:
            raise InputError(f"the graphs in {directory} come from different models; export them again together")
        seen = mine
        paths[graph] = path
    config = ModelConfig.from_dict(json.loads(seen[0]))
    missing = [g for g in graph_names(config) if g not in paths]
    if missing:
        raise InputError(f"{directory} lacks {', '.join(g + '.onnx' for g in missing)} for this {config.movie_attention}-attention model")
    return {"config": config, "weights_sha256": seen[1], "precision": seen[2], "paths": {g: paths[g] for g in graph_names(config)}}


def cache_root() -> Path:
    """Where exports made on first use live: $SSMP_INFER_CACHE, else ~/.cache/ssmp-infer (a location
    only; nothing read from it changes a result, and a stale entry is detected by its metadata)."""
    root = os.environ.get("SSMP_INFER_CACHE")
    return Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ssmp-infer"


def cached_onnx_dir(model: SSMPEncoder, precision: str = "fp32") -> Path:
    """The export of `model` in the cache, made now if it is not there yet:
    onnx/<weights hash>-<config hash>[-int8].

    The config is part of the key because the same weights under another attention give other graphs.
    """
    config = json.dumps(model.cfg.to_dict(), sort_keys=True)
    key = f"{weights_sha256(model)[:24]}-{hashlib.sha256((FORMAT + config).encode()).hexdigest()[:8]}"
    if precision != "fp32":
        key += f"-{precision}"
    return cache_entry(cache_root() / "onnx" / key, read_metadata,
                       lambda tmp: export_onnx(model, tmp, force=True, precision=precision))


def cache_entry(target: Path, check, build) -> Path:
    """The cache directory `target`, if `check(target)` accepts it; else made now by `build(tmp)` in a
    private directory beside it and renamed into place. A damaged or outdated entry is replaced.
    Concurrent first uses each build their own and the first rename wins (the builds are the same;
    the others' work is thrown away, never mixed in)."""
    if target.is_dir():
        try:
            check(target)
            return target
        except InputError:
            shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process got there first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _require_onnx(exporting: bool = True) -> None:
    """Reading an export needs `onnx`; writing one needs `onnxscript` too (the exporter translates with it)."""
    try:
        import onnx  # noqa: F401

        if exporting:
            import onnxscript  # noqa: F401
    except ImportError as e:
        what = "exporting to ONNX" if exporting else "reading ONNX files"
        raise InputError(f"{what} needs {e.name}, which is not installed: pip install 'ssmp-infer[onnx]'") from None
