"""`ssmp-infer shots | embed | trailer | render`: the movie-file commands (the `video` extra).

Registered into the main parser by `add_parser(sub)`; like the rest of the CLI, bad input is one
sentence and exit 2, outputs are atomic, and the heavy imports wait for the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import InputError

# Spelled out rather than imported from ssmp_infer.video, so that `--help` imports none of it.
from .names import DETECTORS
DEFAULT_DETECTOR = "auto"
DEFAULT_EMBEDDER = "efficientnet-lite0"


def _log(args):
    quiet = getattr(args, "quiet", False)
    return (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr, flush=True))


def _progress(args) -> bool:
    from .video.progress import default_enabled

    return default_enabled(args.quiet)


def cmd_shots(args) -> None:
    from .atomic import check_output_path, write_text_atomic
    from .engine import resolve_device
    from .video.shots import detect_shots

    check_output_path(args.out, args.force)
    shots = detect_shots(args.video, args.detector, device=str(resolve_device(args.device)), progress=_progress(args))
    write_text_atomic(args.out, json.dumps(shots.to_dict(), indent=1) + "\n", force=args.force)
    print(json.dumps({"out": args.out, "detector": shots.detector, "num_shots": len(shots), "num_frames": shots.num_frames,
                      "fps": float(shots.fps), "elapsed_s": round(shots.elapsed_s, 3),
                      "frames_per_s": round(shots.num_frames / max(shots.elapsed_s, 1e-9), 1)}))


def cmd_embed(args) -> None:
    import time

    from .atomic import check_output_path
    from .engine import resolve_device
    from .video.embed import embed_shots, make_embedder
    from .video.frames import probe
    from .video.pipeline import write_npy
    from .video.shots import load_shots

    check_output_path(args.out, args.force)
    if not args.out.endswith(".npy"):
        raise InputError(f"--out {args.out} must end in .npy")
    info = probe(args.video)
    shots = load_shots(args.shots)
    shots.check_matches(info, args.shots)
    embedder = make_embedder(args.embedder, args.checkpoint, str(resolve_device(args.device)))
    start = time.perf_counter()
    features = embed_shots(args.video, shots, embedder, args.frames_per_shot, progress=_progress(args))
    write_npy(args.out, features, force=args.force)
    print(json.dumps({"out": args.out, "embedder": embedder.name, "shape": list(features.shape),
                      "frames_per_shot": args.frames_per_shot, "elapsed_s": round(time.perf_counter() - start, 3)}))


def trailer_engine_options(args) -> dict:
    """`Engine.load`'s backend options from the command line, as every command that runs the model takes
    them (`cli_backend`); the model and the device are `make_trailer`'s own arguments."""
    from .cli_backend import engine_options

    options = engine_options(args)
    del options["model_dir"], options["device"]
    return options


def cmd_trailer(args) -> None:
    from .cli_decode import decode_config
    from .video.pipeline import make_trailer

    record = make_trailer(
        args.video, args.out, length=args.length, music=args.music, model=args.model, embedder_name=args.embedder,
        checkpoint=args.checkpoint, detector=args.detector, frames_per_shot=args.frames_per_shot,
        shot_seconds=args.shot_seconds, fade=args.fade, decode=decode_config(args), device=args.device,
        engine_options=trailer_engine_options(args), force=args.force, progress=_progress(args), log=_log(args),
    )
    summary = {k: record[k] for k in ("shots", "length", "num_movie_shots", "duration", "num_frames", "model", "timings_s")}
    print(json.dumps({"out": args.out, **summary}))


def cmd_render(args) -> None:
    from .video.pipeline import render_existing

    print(json.dumps(render_existing(args.video, args.trailer, args.out, shots_path=args.shots, music=args.music,
                                     shot_seconds=args.shot_seconds, fade=args.fade, force=args.force,
                                     progress=_progress(args), log=_log(args))))


def _common(p, device: bool = True) -> None:
    if device:
        p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars or step lines on stderr")


def add_parser(sub) -> None:
    """Register the movie-file commands on the main parser's subcommands."""
    from .cli_backend import add_model_arg
    from .cli_decode import add_decode_args

    p = sub.add_parser("shots", help="shot boundaries of a video file (TransNetV2 or a content detector)")
    p.add_argument("video", help="any video file PyAV decodes")
    p.add_argument("--out", required=True, help="shots.json to write: frames and seconds of each shot, fps, duration")
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                   help="transnetv2 (learned, the paper's, the more accurate), content (PySceneDetect, no weights, "
                        "~40x faster on a CPU) or auto (default: transnetv2 on CUDA, content on a CPU)")
    _common(p)
    p.set_defaults(func=cmd_shots)

    p = sub.add_parser("embed", help="one feature row per shot of a video file")
    p.add_argument("video")
    p.add_argument("--shots", required=True, help="shots.json of this video (from `ssmp-infer shots`)")
    p.add_argument("--out", required=True, help="features.npy to write, (shots, feature_dim) float32")
    add_embedder_args(p)
    _common(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("trailer", help="video file in, trailer out: shots, features, SSMP, timeline, render, sheet")
    p.add_argument("video")
    p.add_argument("--out", required=True,
                   help="directory for shots.json, features.npy (a cache, kept) and trailer.{json,otio,edl,mp4,png}")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--length", type=int, default=None, help="trailer shots (default: 3.7%% of the movie's shots)")
    group.add_argument("--music", default=None,
                       help="audio (any file PyAV decodes): the trailer lasts as long as it, cuts on its changes "
                            "(onsets, sections) and has as many shots as fill it without black; laid under the render")
    add_model_arg(p, "the bundled model of the embedder's feature size")
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                   help="auto (default: transnetv2 on CUDA, content on a CPU), transnetv2 or content")
    add_embedder_args(p)
    p.add_argument("--shot-seconds", type=float, default=2.0, help="without --music: seconds per trailer shot")
    add_fade_arg(p, 0.0)
    add_decode_args(p)
    _common(p, device=False)
    p.set_defaults(func=cmd_trailer)

    p = sub.add_parser("render", help="render a trailer JSON (from `trailer`, or from `run` with --shots) to MP4")
    p.add_argument("video")
    p.add_argument("trailer", help="trailer.json from `trailer`, or the JSON `run` printed for this movie's features")
    p.add_argument("--out", required=True, help="MP4 to write (H.264 + AAC); its contact sheet goes beside it (.png)")
    p.add_argument("--shots", default=None, help="the shots file the features were computed from (for `run` output)")
    p.add_argument("--music", default=None, help="audio to lay under the render (default: trailer.json's music, else the clips' own sound)")
    p.add_argument("--shot-seconds", type=float, default=2.0, help="`run` output without --music: seconds per trailer shot")
    add_fade_arg(p, None)
    _common(p, device=False)
    p.set_defaults(func=cmd_render)


def add_fade_arg(p: argparse.ArgumentParser, default: float | None) -> None:
    p.add_argument("--fade", type=float, default=default,
                   help="seconds to fade picture and sound in from black and out to black (default: "
                        + ("none" if default == 0 else "trailer.json's, else none") + "); the only black in a trailer")


def add_embedder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embedder", default=DEFAULT_EMBEDDER,
                   help="efficientnet-lite0 (default, 1280-d, offline), imagebind (1024-d) or open-clip[:ARCH] "
                        "(default ARCH ViT-B-32); the last two need --checkpoint")
    p.add_argument("--checkpoint", default=None, help="local weights file for imagebind or open-clip")
    p.add_argument("--frames-per-shot", type=int, default=3, help="frames sampled evenly through each shot (K)")
