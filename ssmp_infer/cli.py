"""`ssmp-infer`: run | eval | train | synth | bench | export.

Bad input is one sentence on stderr and exit status 2, never a traceback; outputs are written
atomically and an existing file is replaced only with --force.
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import sys

import numpy as np

from .config import (
    DEFAULT_MOVIE_ATTENTION,
    MASK_SCHEDULES,
    MOVIE_ATTENTION,
    PRESETS,
    model_preset,
    train_preset,
)
from . import cli_compare, cli_review, cli_serve, cli_video
from .cli_backend import add_model_arg, engine_options
from .names import METHODS
from .cli_decode import add_decode_args, decode_config, seed_arg
from .controls import EditorControls, check_candidates, parse_bans, parse_pins
from .errors import InputError, caused_by_interrupt
from .inputs import dumps_json  # JSON out: NaN or Inf refused, never written as invalid JSON

EXIT_BAD_INPUT = 2
RUN_OUTPUT = (
    "Output (JSON): shots, the movie's shot indices in trailer order; confidence, per slot the probability "
    "of its shot in the round it locked, a softmax over all of the movie's shots (a uniform guess is 1/shots: "
    "0.0016 for 643 shots, so 0.02 is 12 times that; compare the slots of one trailer, it is not the chance "
    "of being right); steps, the encoder passes that could lock one of its slots (topk skips the rounds in "
    "which its schedule locks none: 9 of 12 at length 10)."
)


def shows_default(action: argparse.Action) -> bool:
    """An option whose default is worth printing (not a flag's False, not "none given")."""
    return bool(action.option_strings) and not any(action.default is v for v in (None, False, True, argparse.SUPPRESS))


class HelpWithDefaults(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the help already names it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not shows_default(action):
            return text or None
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (argparse prints the whole usage block), names the
    command it belongs to, and suggests the option a mistyped one was probably meant to be."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpWithDefaults)
        super().__init__(*args, **kwargs)

    def error(self, message):
        command = self.prog.removeprefix("ssmp-infer").strip()
        raise InputError(f"{command + ': ' if command else ''}{message}{self.suggestion(message)}")

    def suggestion(self, message: str) -> str:
        """ "(did you mean --length?)" for an unrecognised option close to a known one."""
        import difflib

        if not message.startswith("unrecognized arguments:"):
            return ""
        known = set(self._option_string_actions)
        for action in self._actions:  # the top-level parser reports the unknown options of every command
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    known |= set(parser._option_string_actions)
        guesses = []
        for word in message.split(":", 1)[1].split():
            if word.startswith("--"):
                close = difflib.get_close_matches(word.split("=")[0], sorted(known), n=1, cutoff=0.75)
                guesses += [f"{close[0]} for {word.split('=')[0]}"] if close else []
        if len(guesses) == 1:
            return f" (did you mean {guesses[0].split(' for ')[0]}?)"
        return f" (did you mean {', '.join(guesses)}?)" if guesses else ""


def trailer_csv(trailer) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["slot", "shot", "confidence"])
    for slot, (shot, conf) in enumerate(zip(trailer.shots, trailer.confidence)):
        writer.writerow([slot, shot, f"{conf:.6f}"])
    return buf.getvalue()


def candidates_json(trailers) -> dict:
    """The run's JSON with the per-trailer fields moved into `candidates`, most confident first."""
    own = ("shots", "confidence", "seed", "steps")
    shared = {k: v for k, v in trailers[0].to_dict().items() if k not in own}
    return {**shared, "candidates": [
        {"seed": t.seed, "shots": t.shots, "confidence": t.confidence, "mean_confidence": t.mean_confidence,
         "steps": t.steps}
        for t in trailers
    ]}


def candidates_csv(trailers) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["candidate", "seed", "slot", "shot", "confidence"])
    for rank, t in enumerate(trailers):
        for slot, (shot, conf) in enumerate(zip(t.shots, t.confidence)):
            writer.writerow([rank, t.seed, slot, shot, f"{conf:.6f}"])
    return buf.getvalue()


def single_npy(paths: list[str]) -> bool:
    """One path that is neither a directory nor an .npz: one movie's run (one JSON object, or CSV)."""
    from pathlib import Path

    return len(paths) == 1 and not Path(paths[0]).is_dir() and Path(paths[0]).suffix != ".npz"


def cmd_run(args) -> None:
    from .atomic import check_output_path, write_text_atomic
    from .engine import Engine

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.ray is not None:
        from .serve.ray_run import looks_like_address

        if not looks_like_address(args.ray):  # `run --ray movies/`: argparse took the first input for ADDRESS
            args.features.insert(0, args.ray)
            args.ray = "local"
    if not args.features:
        raise InputError("run: give at least one movie (.npy, .npz or a directory of .npy files)")
    many = args.ray is not None or not single_npy(args.features)  # --ray always writes JSON Lines
    if many and args.format == "csv":
        raise InputError("--format csv takes a single .npy movie; several movies are written as JSON Lines")
    controls = EditorControls(parse_pins(args.pin), parse_bans(args.ban))
    check_candidates(args.candidates, args.mode, args.seed)
    if many and (controls or args.candidates > 1):
        raise InputError("--pin, --ban and --candidates take a single .npy movie, whose shots they name")
    if args.out == "-":  # the Unix convention: standard output
        args.out = None
    if args.resume:
        check_resume(args, many)
    elif args.out is not None:
        check_output_path(args.out, args.force)  # before the work, not after
    if args.ray is not None:
        import ray

        from .serve.ray_run import ray_generate

        generate = ray_generate(args)  # joins or starts Ray: the engines live in its actors
        try:
            run_many(args, None, generate=generate)
        finally:
            ray.shutdown()
        return
    engine = Engine.load(**engine_options(args))
    if many:
        run_many(args, engine)
        return

    from .data import load_features

    features = load_features(args.features[0], engine.feature_dim)
    if args.candidates > 1:
        found = engine.candidates(features, args.candidates, length=args.length, decode=decode_config(args), controls=controls)
        text = dumps_json(candidates_json(found)) + "\n" if args.format == "json" else candidates_csv(found)
    else:
        trailer = engine.generate(features, length=args.length, decode=decode_config(args), controls=controls)
        text = dumps_json(trailer.to_dict()) + "\n" if args.format == "json" else trailer_csv(trailer)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(args.out, text, force=args.force)


def check_resume(args, many: bool) -> None:
    """--resume goes on from a JSON Lines --out of many movies; refused, in one sentence, where it cannot."""
    from pathlib import Path

    if args.out is None:
        raise InputError("--resume goes on from an --out file; give the one the stopped run wrote")
    if not many:
        raise InputError("--resume takes several movies (a directory, an .npz, several .npy, or --ray); "
                         "one movie is written whole or not at all")
    if args.force:
        raise InputError("--resume keeps the records in --out and --force replaces them; give one of the two")
    out = Path(args.out)
    if out.exists() and not out.is_file():
        raise InputError(f"--out {out} exists and is not a regular file")
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: directory {out.parent} does not exist")


def resume_signature(args) -> dict:
    """What every trailer record in a resumed --out must say (see resume.SIGNATURE)."""
    from .engine import model_source

    signature = {"model": model_source(args.model), "backend": args.backend, "mode": args.mode, "seed": args.seed}
    if args.length is not None:
        signature["length"] = args.length
    return signature


def run_many(args, engine, generate=None) -> None:
    """JSON Lines, one record per movie in input order; bad movies are error records and a sentence on
    stderr each, and the run then fails (exit 2) after writing every good movie. `generate(items, start)`,
    when given, makes the results of items[start:] instead of `engine` (run --ray). With --resume the
    records already in --out are kept and the run goes on after them (ssmp_infer/resume.py)."""
    from .atomic import write_atomic
    from .many import generate_many, iter_inputs
    from .resume import Done, append_records, read_done

    items = list(iter_inputs(args.features))  # names and loaders only: gives the progress bar its total
    done = Done(0, 0, 0)
    if args.resume:
        done = read_done(args.out, [name for name, _ in items], resume_signature(args))
        if done.records:
            print(f"ssmp-infer: resuming after {done.records} of {len(items)} movies already in {args.out}",
                  file=sys.stderr)
    progress = sys.stderr.isatty()  # a bar only for a person watching; a log gets the error lines alone
    shown = ""  # the bar now on the terminal, overwritten in place with \r
    failed = done.failed

    def say(line: str, end: str = "\n") -> None:
        nonlocal shown
        print("\r" + line.ljust(len(shown)) if progress else line, end=end, file=sys.stderr, flush=True)
        shown = line if end == "" else ""

    def write(out) -> None:
        nonlocal failed
        rest = items[done.records:]
        results = generate(items, done.records) if generate else generate_many(
            engine, rest, length=args.length, decode=decode_config(args), batch_movies=args.batch_size)
        for count, result in enumerate(results, done.records + 1):
            out.write(dumps_json(result.to_dict()) + "\n")  # one whole line per write: a kill tears at most the last
            out.flush()
            if not result.ok:
                failed += 1
                say(f"ssmp-infer: error: {result.name}: {result.error}")
            if progress:
                say(f"[{count}/{len(items)}] {result.name}", end="")
        if progress:
            say(shown)  # keep the final count, end the line

    if args.out is None:
        write(sys.stdout)
    elif args.resume:  # in place, record by record: what a killed run finished stays for the next resume
        append_records(args.out, done, write)
    else:
        def write_file(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                write(f)

        write_atomic(args.out, write_file, force=args.force)
    if failed:
        raise InputError(f"{failed} of {len(items)} movies failed; their records say why")


# Options only SSMP reads, (flag, argparse dest, default): a baseline refuses them rather than ignore them.
DECODE_ONLY_OPTIONS = (("--mode", "mode", "paper"), ("--steps", "steps", None), ("--precision", "precision", "fp32"),
                       ("--refresh-every", "refresh_every", None), ("--backend", "backend", "torch"), ("--onnx", "onnx", None),
                       ("--engines", "engines", None), ("--cuda-graphs", "cuda_graphs", False), ("--kernels", "kernels", "auto"))
TRAIN_ONLY_OPTIONS = (("--movie-attention", "movie_attention", DEFAULT_MOVIE_ATTENTION),
                      ("--mask-schedule", "mask_schedule", "self-paced"), ("--views", "views", None),
                      ("--shot-prior", "shot_prior", None), ("--context-prior", "context_prior", None),
                      ("--position-keys", "position_keys", None), ("--whole-range-share", "whole_range_share", None),
                      ("--context-hidden", "context_hidden", None), ("--context-novelty", "context_novelty", None),
                      ("--context-dropout", "context_dropout", None), ("--context-profile", "context_profile", None))


def refuse_ssmp_options(args, options) -> None:
    given = [flag for flag, dest, default in options if getattr(args, dest) != default]
    if given:
        them = "it applies" if len(given) == 1 else "they apply"
        raise InputError(f"{', '.join(given)}: {them} to SSMP only, not to --method {args.method}")


def cmd_eval(args) -> None:
    from .data import load_split
    from .metrics import score_trailer, summarise

    if args.tolerance < 0:
        raise InputError(f"--tolerance must be 0 or more, got {args.tolerance}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.model is not None and args.method == "random":
        raise InputError("give either --model or --method random, not both")
    if args.method == "random":
        refuse_ssmp_options(args, DECODE_ONLY_OPTIONS)
        feature_dim, method = None, "random"
        rng = np.random.default_rng(args.seed)
    elif args.method != "ssmp":
        from .baselines import generate_trailers, load_baseline
        from .engine import resolve_device

        refuse_ssmp_options(args, DECODE_ONLY_OPTIONS)
        if args.model is None:
            raise InputError(f"--method {args.method} needs --model DIR, written by `ssmp-infer train --method {args.method}`")
        baseline = load_baseline(args.model, args.method, resolve_device(args.device))
        feature_dim, method = baseline.cfg.feature_dim, f"{args.method}:{args.model}"
    else:
        from .engine import Engine

        engine = Engine.load(**engine_options(args))
        feature_dim, method = engine.feature_dim, f"ssmp:{engine.source}:{args.mode}"
    examples = load_split(args.data, args.split, feature_dim)
    scores = []
    for start in range(0, len(examples), args.batch_size):
        batch = examples[start : start + args.batch_size]
        truths = [[int(g) for g in e.targets] for e in batch]
        if args.method == "random":
            preds = [rng.permutation(e.movie.shape[0])[: len(t)].tolist() for e, t in zip(batch, truths)]
        elif args.method != "ssmp":
            preds = generate_trailers(baseline, [e.movie for e in batch], [len(t) for t in truths], args.batch_size)
        else:
            trailers = engine.generate_batch([e.movie for e in batch], [len(t) for t in truths], decode_config(args))
            preds = [t.shots for t in trailers]
        for e, pred, truth in zip(batch, preds, truths):
            s = score_trailer(pred, truth, args.tolerance)
            print(f"{e.name}: f1 {s.f1:.3f}  ld {s.ld}  aa {'-' if s.aa is None else f'{s.aa:.3f}'}", file=sys.stderr)
            scores.append(s)
    summary = {**summarise(scores), "method": method, "split": args.split, "tolerance": args.tolerance}
    print(dumps_json(summary))


def cmd_train(args) -> None:
    from .train import train

    overrides = {k: v for k, v in (("dropout", args.dropout), ("shot_prior", args.shot_prior),
                                   ("context_prior", args.context_prior), ("position_keys", args.position_keys),
                                   ("context_hidden", args.context_hidden), ("context_novelty", args.context_novelty),
                                   ("context_dropout", args.context_dropout), ("context_profile", args.context_profile))
                 if v is not None}  # model_preset: --no-shot-prior or --no-context-prior drop the branch's refinements
    overrides["feature_dim"] = args.feature_dim or data_feature_dim(args.data)
    model_config = model_preset(args.preset, movie_attention=args.movie_attention, **overrides)
    cfg = train_preset(
        args.preset,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_minutes=args.max_minutes,
        seed=args.seed,
        device=args.device,
        mask_schedule=args.mask_schedule,
        views=args.views,
        whole_range_share=args.whole_range_share,
        validation_fraction=args.validation_fraction,
        ema_decay=args.ema_decay,
        patience=args.patience,
        feature_noise=args.feature_noise,
        shot_drop=args.shot_drop,
        crop_shots=args.crop_shots,
    )
    if args.method != "ssmp":
        from .baselines import BaselineConfig, train_baseline

        refuse_ssmp_options(args, TRAIN_ONLY_OPTIONS)
        size = BaselineConfig.preset(args.preset, feature_dim=model_config.feature_dim, dropout=model_config.dropout)
        print(dumps_json(train_baseline(args.method, args.data, args.out, cfg, size, force=args.force)))
        return
    print(dumps_json(train(args.data, args.out, model_config, cfg, force=args.force)))


def data_feature_dim(root: str) -> int:
    """The feature size of a data root's first training movie (1024, the preset's, when unreadable:
    load_split then says what is wrong with the data)."""
    from pathlib import Path

    from .data import MOVIE_DIR

    for path in sorted((Path(root) / "train" / MOVIE_DIR).glob("*.npy"))[:1]:
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError):
            break
        if len(shape) == 2 and shape[1] > 0:
            return int(shape[1])
    return 1024


def cmd_synth(args) -> None:
    from .synth import shot_range, write_dataset

    min_shots, max_shots = shot_range(args.shots, args.min_shots, args.max_shots)
    summary = write_dataset(
        args.out,
        movies=args.movies,
        seed=args.seed,
        test_fraction=args.test_fraction,
        min_shots=min_shots,
        max_shots=max_shots,
        force=args.force,
        world_seed=args.world_seed,
        feature_dim=args.feature_dim,
        worth=args.worth,
        order=args.order,
        trailer_fraction=args.trailer_fraction,
    )
    print(dumps_json(summary))


def cmd_bench(args) -> None:
    from .bench import format_table, options_from_args, run_bench

    result = run_bench(**options_from_args(args))
    print(format_table(result))
    print(json.dumps(result))  # the last line: the whole result


def cmd_export(args) -> None:
    from .checkpoint import load_checkpoint
    from .export import export_onnx, export_tensorrt, read_metadata

    allowed = {"onnx": ("fp32", "int8"), "tensorrt": ("fp16",)}[args.format]
    precision = args.precision or allowed[0]
    if precision not in allowed:
        raise InputError(f"--format {args.format} writes {' or '.join(allowed)}, not {precision}")
    model, _ = load_checkpoint(args.model)
    if args.format == "tensorrt":
        from pathlib import Path

        from .export.tensorrt_export import ENGINES_JSON, Profiles

        default = Profiles()
        profiles = Profiles(*(
            (low, min(opt, high), high) for (low, opt, _), high in zip(
                (default.batch, default.shots, default.slots),
                (args.max_batch or default.batch[2], args.max_shots or default.shots[2], args.max_slots or default.slots[2]),
            )
        ))
        paths = export_tensorrt(model, args.out, force=args.force, precision=precision, profiles=profiles)
        print(json.dumps({"format": "tensorrt", "precision": precision, "out": str(args.out),
                          "files": [str(p) for p in paths.values()] + [str(Path(args.out) / ENGINES_JSON)],
                          "profiles": profiles.to_dict()}))
        return
    if (args.max_batch, args.max_shots, args.max_slots) != (None, None, None):
        raise InputError("--max-batch, --max-shots and --max-slots size TensorRT engines; they need --format tensorrt")
    paths = export_onnx(model, args.out, force=args.force, precision=precision)
    meta = read_metadata(args.out)
    print(json.dumps({"format": "onnx", "precision": precision, "out": str(args.out), "files": [str(p) for p in paths.values()],
                      "weights_sha256": meta["weights_sha256"], "movie_attention": meta["config"].movie_attention}))


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = ArgumentParser(prog="ssmp-infer", description="SSMP movie trailer generation (arXiv 2512.04426)")
    parser.add_argument("--version", action="version", version=f"ssmp-infer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    p = sub.add_parser("run", help="generate trailers from movies' shot features (.npy I×D, .npz, directories)",
                       epilog=RUN_OUTPUT)
    p.add_argument("features", nargs="*",  # "*": `run --ray movies/` lets --ray take the first input (cmd_run)
                   help="movies: .npy files of shape (shots, feature_dim), directories of them, .npz archives "
                        "(one movie per array). One .npy alone prints one JSON object (or CSV); anything more "
                        "prints JSON Lines, one {name, ...trailer} or {name, error} record per movie in input "
                        "order (--format csv is then refused)")
    add_model_arg(p)
    p.add_argument("--length", type=int, default=None, help="trailer shots (default: 3.7%% of the movie's shots)")
    add_decode_args(p)
    p.add_argument("--out", default=None, help="write here instead of stdout (- is stdout)")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.add_argument("--resume", action="store_true",
                   help="several movies into a JSON Lines --out: keep the records a stopped run wrote there (the "
                        "same inputs and options) and go on after them; --out is then written record by record")
    p.add_argument("--batch-size", type=int, default=8, help="several movies: movies per padded batch")
    p.add_argument("--pin", action="append", metavar="SLOT:SHOT",
                   help="start slot SLOT locked on movie shot SHOT; the rest is predicted around it (repeatable)")
    p.add_argument("--ban", action="append", metavar="SHOTS",
                   help="shots never to choose, a list or ranges such as 100-140,512 (repeatable)")
    p.add_argument("--candidates", type=int, default=1, metavar="K",
                   help="K trailers from seeds S..S+K-1 in one batched run, most confident first (--mode paper)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the movies on Ray Data, an Engine per actor (serve extra): a local Ray, or the cluster "
                        "at ADDRESS (auto, HOST:PORT, ray://HOST:PORT); writes JSON Lines")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="score generated trailers against a data set's ground truth")
    p.add_argument("--data", required=True, help="data root in the CMTD layout")
    p.add_argument("--split", choices=("train", "test"), default="test")
    add_model_arg(p)
    p.add_argument("--method", choices=METHODS, default="ssmp",
                   help="ssmp (the model's decoding, --mode), a baseline checkpoint's method, or random (no model)")
    p.add_argument("--tolerance", type=int, default=0, help="a shot within R positions of a true shot counts")
    p.add_argument("--batch-size", type=int, default=8, help="movies per padded batch")
    add_decode_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train an SSMP model with the self-paced mask ratio")
    p.add_argument("--data", required=True, help="data root in the CMTD layout (uses its train split)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--method", choices=("ssmp", "select-rank", "autoregressive"), default="ssmp",
                   help="ssmp, or a baseline it is compared with (same size preset, budget and selection)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--movie-attention", choices=MOVIE_ATTENTION, default=DEFAULT_MOVIE_ATTENTION,
                   help="full: the paper's; prefix: movie tokens read only the movie (exact state reuse)")
    p.add_argument("--mask-schedule", choices=MASK_SCHEDULES, default="self-paced")
    p.add_argument("--views", type=int, default=None,
                   help="differently masked copies of each trailer per step (default: 4 under prefix, 1 under full)")
    p.add_argument("--whole-range-share", type=float, default=None,
                   help="share of trailers masked at a ratio drawn from the whole range whatever the schedule's "
                   "ceiling (default 0.75; 0: the schedule alone, as in the paper)")
    p.add_argument("--dropout", type=float, default=None, help="model dropout (default: the preset's)")
    p.add_argument("--feature-dim", type=int, default=None, help="shot feature size (default: the data's)")
    p.add_argument("--shot-prior", action=argparse.BooleanOptionalAction, default=None,
                   help="add a learned per-shot logit to every slot's scores (default: on in both presets; "
                   "--no-shot-prior scores with the paper's cos/tau alone)")
    p.add_argument("--context-prior", action=argparse.BooleanOptionalAction, default=None,
                   help="add to the shot prior a small MLP's read of each shot against its movie (default: on "
                   "with the shot prior)")
    p.add_argument("--position-keys", action=argparse.BooleanOptionalAction, default=None,
                   help="score slots against each shot's feature plus a learned map of its position (default: on "
                   "in both presets; --no-position-keys scores against the features alone, as the paper)")
    p.add_argument("--context-hidden", type=int, default=None, help="the context branch's hidden units (default: 256 in both presets)")
    p.add_argument("--context-novelty", action=argparse.BooleanOptionalAction, default=None,
                   help="let the context branch read each shot's novelty against the 5 shots before it (default: on "
                   "in both presets)")
    p.add_argument("--context-dropout", type=float, default=None,
                   help="dropout on the context branch's hidden units (default: 0.2 in both presets)")
    p.add_argument("--context-profile", type=int, default=None, metavar="K",
                   help="let the context branch read each shot's cosine with the shots 2 to K before and after it, "
                   "the profile a scene change shows (default: 0, off)")
    p.add_argument("--validation-fraction", type=float, default=None,
                   help="share of the train split held out to select the weights whose trailers score best there "
                   "(default 0.15, fewer once their trailers hold 600 slots; 0: keep the last weights)")
    p.add_argument("--patience", type=int, default=None,
                   help="stop when the held-out trailers have not improved for this many of the run's 24 validation "
                   "points (default 8; 0: never)")
    p.add_argument("--crop-shots", type=int, default=None,
                   help="train on random windows of this many shots of longer movies, each shot keeping its place "
                   "in the whole movie (default 512; 0: whole movies)")
    p.add_argument("--feature-noise", type=float, default=None,
                   help="re-encoding noise on the movie features while training, a share of each feature's norm "
                   "(default 0.1; 0: none)")
    p.add_argument("--shot-drop", type=float, default=None,
                   help="share of the shots no trailer slot names left out of each training movie, anew each time "
                   "(default 0; 0: none)")
    p.add_argument("--ema-decay", type=float, default=None,
                   help="validate and save a moving average of the weights with this decay (default 0.99; 0: the raw weights)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the train split (default: the preset's)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="time budget: warm-up and decay follow the elapsed share of it, and the run validates, "
                   "saves and ends within it")
    p.add_argument("--batch-size", type=int, default=None, help="movies per step (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]: the whole step runs there")
    p.add_argument("--force", action="store_true", help="overwrite a model already in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("synth", help="write a synthetic data set in the CMTD layout")
    p.add_argument("--out", required=True, help="data root to create")
    p.add_argument("--movies", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="draws the movies (and the world), in [0, 2^63)")
    p.add_argument("--world-seed", type=int, default=None,
                   help="draw the world from this seed instead of --seed: fresh movies of a known world")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--shots", default=None, help="shots per movie, LO-HI or N (default 1400-2400, about CMTD's 1909)")
    p.add_argument("--min-shots", type=int, default=None, help="lower end of --shots")
    p.add_argument("--max-shots", type=int, default=None, help="upper end of --shots")
    p.add_argument("--feature-dim", type=int, default=1024,
                   help="shot feature size (default 1024, ImageBind's; 1280 matches the efficientnet-lite0 embedder)")
    p.add_argument("--worth", default="mixed",
                   help="trailer-worthiness rule: mixed (default: kind-gated factors, products, contrasts, position) "
                   "or direction (one hidden feature direction plus scene openings)")
    p.add_argument("--order", default="arc",
                   help="trailer order rule: arc (default: opening act, then scenes by rising intensity) or movie")
    p.add_argument("--trailer-fraction", type=float, default=0.037,
                   help="share of a movie's shots its trailer holds, ±13%% per movie, at least 4 shots "
                   "(default 0.037, CMTD's; at most 0.5)")
    p.add_argument("--force", action="store_true", help="replace train/, test/ and ceiling.json in a non-empty --out")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("bench", help="time the engine against a plain decoding loop and against itself without reuse")
    add_model_arg(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--shots", default=None, help="shots per synthetic movie, N or N,M,... (default 1909, CMTD's mean)")
    p.add_argument("--small-shots", type=int, default=None, help="a short movie's shots as well (default 400; 0: none)")
    p.add_argument("--modes", default="paper,topk", help="decoding modes to time (default paper,topk)")
    p.add_argument("--batch-sizes", default=None, help="movies per batch (default 1,4; batch 1 always runs)")
    p.add_argument("--precisions", default=None,
                   help="fp32 and/or bf16 (default: fp32 on a CPU, fp32,bf16 on CUDA; fp32 always runs)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per setting, after one warm-up (default 3)")
    p.add_argument("--seed", type=seed_arg, default=0, help="draws the synthetic movies")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run in seconds: 160 shots, batch 1,2, one repeat (given options still apply)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="write the encoder as ONNX graphs (prepare + step, or full + step) or TensorRT engines")
    add_model_arg(p)
    p.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx",
                   help="onnx (needs the onnx extra) or tensorrt (engines for this GPU; needs the tensorrt extra)")
    p.add_argument("--precision", choices=("fp32", "int8", "fp16"), default=None,
                   help="onnx: fp32 (default) or int8 (dynamically quantised, for CPUs); tensorrt: fp16 (default)")
    for dim, default in (("batch", 8), ("shots", 8192), ("slots", 256)):
        p.add_argument(f"--max-{dim}", type=int, default=None,
                       help=f"tensorrt: the largest {dim} the engines take (default {default}; more costs GPU memory)")
    p.add_argument("--out", required=True, help="directory to write the graphs into")
    p.add_argument("--force", action="store_true", help="overwrite graphs already in --out")
    p.set_defaults(func=cmd_export)
    cli_compare.add_parser(sub)
    cli_video.add_parser(sub)  # shots, embed, trailer, render: the movie-file commands (video extra)
    cli_serve.add_parser(sub)  # serve: the HTTP API on Ray Serve (serve extra)
    cli_review.add_parser(sub)  # review: a page to pin, ban and regenerate a `trailer` directory (video extra)
    for command in sub.choices.values():  # an option without help still shows its default
        for action in command._actions:
            if action.help is None and shows_default(action):
                action.help = "default: %(default)s"
    return parser


def os_error_sentence(e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    short_write = e.errno is None and " requested and " in str(e)  # numpy's tofile/save: the disk ran out
    if e.errno in (errno.ENOSPC, errno.EDQUOT) or short_write:  # outputs are written aside and renamed: nothing replaced
        why = "a write stopped short" if short_write else e.strerror
        return (f"the disk is full ({why}){where}; the files that were there are as they were: free some "
                "space and run the command again")
    return f"{e.strerror or e}{where}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except InputError as e:
        print(f"ssmp-infer: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # stdout closed early (`| head`): not an error worth a message
        return 1
    except OSError as e:  # a file system refusal (permissions, a full disk): still one sentence
        print(f"ssmp-infer: error: {os_error_sentence(e)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Exception) as e:  # Ctrl-C, also when an import wrapped it in another error
        if not caused_by_interrupt(e):
            raise
        print("ssmp-infer: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
