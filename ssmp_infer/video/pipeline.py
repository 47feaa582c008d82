"""`ssmp-infer trailer`: movie file -> shots -> features -> SSMP -> timeline -> render, in one directory.

DIR holds the intermediate files as a cache: `shots.json` is reused while the video (its size, time and
a hash of both ends) and the detector are the same; `features.npy` while `features.json` (embedder,
its weights, frames per shot, the shots it was computed from) matches. So another --length or another
piece of music re-runs only generation, the timeline and the render. A run that fails keeps the shots
and features it computed (they are that cache: the next run starts from them) and removes every trailer
file it wrote, so no half-made trailer is left; DIR goes too if the run made it and nothing was cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import write_atomic, write_text_atomic
from ..checkpoint import BUNDLED_MODELS as BUNDLED
from ..controls import EditorControls
from ..errors import InputError
from .frames import VideoInfo, fingerprint, probe
from .shots import DEFAULT_DETECTOR, ShotList, detect_shots, load_shots, resolve_detector

# Bundled SSMP models by the feature size they read: the embedder's size picks the model.
BUNDLED_MODELS = {1024: BUNDLED["bundled:default"], 1280: BUNDLED["bundled:1280"]}
OUTPUTS = ("trailer.json", "trailer.otio", "trailer.edl", "trailer.mp4", "trailer.png")
FEW_SHOTS = 2  # a default length that gives this many shots or fewer is said on stderr


def bundled_model_for(feature_dim: int, embedder: str) -> Path:
    if feature_dim not in BUNDLED_MODELS:
        raise InputError(f"no bundled model reads {feature_dim}-d features ({embedder}); pass --model DIR "
                         f"trained on them (bundled: {sorted(BUNDLED_MODELS)}-d)")
    return BUNDLED_MODELS[feature_dim]


def check_model_dims(model_dim: int, feature_dim: int, model: str, embedder: str) -> None:
    if model_dim != feature_dim:
        raise InputError(f"the model {model} reads {model_dim}-d features but {embedder} gives {feature_dim}-d "
                         "features; pass a --model trained on this embedder's features or another --embedder")


@dataclass
class Run:
    """Trailer files this run wrote (removed if it fails) and the time each step took."""

    out_dir: Path
    made_dir: bool = False
    written: list[Path] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    log: Callable[[str], None] = print

    def step(self, name: str, start: float, note: str = "") -> None:
        self.timings[name] = round(time.perf_counter() - start, 3)
        self.log(f"{name}: {self.timings[name]:.1f} s{note}")

    def undo(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)
        if self.made_dir and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()


def shots_key(video_fp: dict, detector: str) -> dict:
    return {"video": {k: video_fp[k] for k in ("size", "mtime_ns", "sha256_ends")}, "detector": detector}


def cached_shots(path: Path, video_fp: dict, detector: str) -> ShotList | None:
    if not path.is_file():
        return None
    try:
        shots = load_shots(path)
    except InputError:
        return None
    if not set(shots.video) >= {"size", "mtime_ns", "sha256_ends"} or shots.dark is None:
        return None  # made before shots said whether they are black: detect again
    return shots if shots_key(shots.video, shots.detector) == shots_key(video_fp, detector) else None


def features_key(shots_path: Path, embedder, frames_per_shot: int) -> dict:
    return {"shots_sha256": hashlib.sha256(shots_path.read_bytes()).hexdigest(), "frames_per_shot": frames_per_shot,
            **embedder.identity, "feature_dim": embedder.feature_dim}


def cached_features(path: Path, meta_path: Path, key: dict, num_shots: int) -> np.ndarray | None:
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        if json.loads(meta_path.read_text(encoding="utf-8")) != key:
            return None
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return features if features.shape == (num_shots, key["feature_dim"]) else None


def write_npy(path: Path, array: np.ndarray, force: bool) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    write_atomic(path, write, force=force)


def make_trailer(
    video: str,
    out_dir: str,
    length: int | None = None,
    music: str | None = None,
    model: str | None = None,
    embedder_name: str = "efficientnet-lite0",
    checkpoint: str | None = None,
    detector: str = DEFAULT_DETECTOR,
    frames_per_shot: int = 3,
    shot_seconds: float = 2.0,
    fade: float = 0.0,
    decode=None,
    device: str = "cpu",
    engine_options: dict | None = None,
    force: bool = False,
    progress: bool = False,
    log=None,
) -> dict:
    """The whole chain into `out_dir`; returns trailer.json's record. `log(line)` gets one line per step
    (default: stderr)."""
    from ..engine import Engine, resolve_device
    from .embed import embed_shots, make_embedder
    from .cuts import fit_to_music
    from .music import load_audio, music_changes
    from .outputs import trailer_title, write_edit_files, write_picture
    from .timeline import plan_slots

    log = log or (lambda line: print(line, file=sys.stderr))
    out = Path(out_dir)
    # Everything that can be checked before the long steps is checked first.
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: directory {out.parent} does not exist")
    if length is not None and length < 1:
        raise InputError(f"--length must be positive, got {length}")
    if frames_per_shot < 1:
        raise InputError(f"--frames-per-shot must be at least 1, got {frames_per_shot}")
    if not shot_seconds > 0:
        raise InputError(f"--shot-seconds must be positive, got {shot_seconds}")
    if not fade >= 0:
        raise InputError(f"--fade must be zero or more seconds, got {fade}")
    if not force:
        for name in OUTPUTS:
            if (out / name).exists():
                raise InputError(f"{out / name} already exists; pass --force to replace the trailer "
                                 "(shots and features in the directory are reused when they still match)")
    info: VideoInfo = probe(video)
    video_fp = fingerprint(video)
    changes = None
    if music is not None:
        t = time.perf_counter()
        changes = music_changes(load_audio(music))
        music_time = time.perf_counter() - t
    dev = str(resolve_device(device))
    detector = resolve_detector(detector, dev)
    embedder = make_embedder(embedder_name, checkpoint, dev)
    model_dir = model if model is not None else bundled_model_for(embedder.feature_dim, embedder.name)
    engine = Engine.load(model_dir, device=device, **(engine_options or {}))
    check_model_dims(engine.feature_dim, embedder.feature_dim, engine.source, embedder.name)

    run = Run(out, made_dir=not out.exists(), log=log)
    out.mkdir(exist_ok=True)
    try:
        if changes is not None:
            run.timings["music"] = round(music_time, 3)
            pulse = f"{changes.beats} beats at {changes.tempo:.0f} bpm" if changes.beats else "no steady beat"
            log(f"music: {changes.duration:.1f} s, {len(changes.times)} changes to cut on ({changes.section_changes} of "
                f"them where a section changes; {pulse}; the rest onsets) in {music_time:.1f} s")

        # 1. shots
        t = time.perf_counter()
        shots_path = out / "shots.json"
        shots = cached_shots(shots_path, video_fp, detector)
        if shots is None:
            shots = detect_shots(video, detector, device=dev, progress=progress)
            write_text_atomic(shots_path, json.dumps(shots.to_dict(), indent=1) + "\n", force=True)
            run.step("shots", t, f" ({shots_word(len(shots))}, {shots.num_frames} frames, {detector})")
        else:
            run.timings["shots"] = 0.0
            log(f"shots: reused {shots_path} ({shots_word(len(shots))})")
        shots.check_matches(info, str(shots_path))
        num_shots = len(shots)
        dark = shots.dark_shots
        if dark:
            log(f"shots: {len(dark)} of them black (fades, gaps between scenes); no trailer uses them")
        usable = num_shots - len(dark)
        if usable == 0:
            raise InputError(f"{video} has no picture to make a trailer of: every frame is black")
        if length is not None and length > usable:  # known now, before the embedding's minutes
            raise InputError(f"--length {length} is larger than the movie's {usable} shots"
                             f"{f' that are not black (of {num_shots})' if dark else ''}; shots cannot repeat")
        controls = EditorControls(bans=frozenset(dark)) if dark else None

        # 2. features
        t = time.perf_counter()
        features_path, meta_path = out / "features.npy", out / "features.json"
        key = features_key(shots_path, embedder, frames_per_shot)
        features = cached_features(features_path, meta_path, key, len(shots))
        if features is None:
            features = embed_shots(video, shots, embedder, frames_per_shot, progress=progress)
            write_npy(features_path, features, force=True)
            write_text_atomic(meta_path, json.dumps(key, indent=1) + "\n", force=True)
            run.step("embed", t, f" ({len(shots)} x {embedder.feature_dim}, {embedder.name})")
        else:
            run.timings["embed"] = 0.0
            log(f"embed: reused {features_path}")

        # 3. SSMP, and with music the cuts: the trailer's length is chosen with them
        t = time.perf_counter()
        cuts, fit = None, None
        if changes is not None:
            fit = fit_to_music(lambda n: engine.generate(features, length=n, decode=decode, controls=controls),
                               shots.bounds, changes, shots.fps, usable)
            trailer, cuts = slots_used(fit.trailer, fit.plan.used), fit.plan.cuts
            log(f"music: {shots_word(trailer.length)} cut on the music's changes (tried: {describe_tries(fit.tries)})")
            if fit.left_out:
                log(f"music: {len(fit.left_out)} of SSMP's {fit.trailer.length} shots left out so that every slot "
                    f"ends on a change of the music (the shortest, then the least sure): "
                    f"{', '.join(map(str, sorted(fit.left_out)))}")
            if fit.cut_short:
                black = set(dark)
                picture = sum(e - s for k, (s, e) in enumerate(shots.bounds) if k not in black)
                log(f"music: the movie's {usable} shots{' not black' if dark else ''} hold {picture / float(shots.fps):.1f} s "
                    f"of picture for {changes.duration:.1f} s of music; the trailer uses "
                    f"{'every shot' if trailer.length == usable else f'{trailer.length} of them'}, ends at "
                    f"{fit.total / float(shots.fps):.1f} s and the music fades out there")
            log_off_music(log, fit.plan, changes)
        else:
            trailer = engine.generate(features, length=length, decode=decode, controls=controls)
            if length is None and trailer.length <= FEW_SHOTS:
                log(f"trailer: the default length (3.7% of the movie's {num_shots} shots) gives "
                    f"{shots_word(trailer.length)}; pass --length or --music for a longer trailer")
        run.step("generate", t, f" ({trailer.length} of {num_shots} shots, {trailer.steps} rounds)")

        # 4. the picture (MP4 and contact sheet), then the timeline, EDL and record
        t = time.perf_counter()
        slots = plan_slots(shots.bounds, trailer.shots, shots.fps, cuts, shot_seconds)
        title = trailer_title(video, shots.fps)
        rendered = write_picture(out / "trailer.mp4", out / "trailer.png", video, slots, shots.fps, title,
                                 music=music, fade=fade, force=force, progress=progress)
        run.written += [out / "trailer.mp4", out / "trailer.png"]
        run.step("render", t, f" ({rendered['seconds']:.1f} s of trailer, a sheet of {len(slots)} "
                              f"tile{'s' if len(slots) > 1 else ''})")
        record = {
            **trailer.to_dict(),
            "video": video_fp,
            "fps": float(shots.fps),
            "fps_rational": f"{shots.fps.numerator}/{shots.fps.denominator}",
            "detector": shots.detector,
            "embedder": embedder.name,
            "frames_per_shot": frames_per_shot,
            "music": None if music is None else str(Path(music).resolve()),
            "music_duration": None if changes is None else round(changes.duration, 6),
            "music_changes": None if changes is None else [round(float(c), 6) for c in changes.times],
            "music_tempo": None if changes is None else round(changes.tempo, 2),  # bpm of its beats; 0: no steady beat
            "cuts": cuts,
            "cuts_off_music": None if fit is None else fit.plan.off_change,
            "left_out": None if fit is None else fit.left_out,  # SSMP's shots too short for the music's changes
            "fade": fade,
            "duration": rendered["seconds"],
            "num_frames": rendered["frames"],
            "slots": [s.to_dict(shots.fps) for s in slots],
            "timings_s": run.timings,
        }
        write_edit_files(out, slots, shots.fps, video, shots.num_frames, title, music, trailer.confidence, record,
                         force=force, written=run.written)
    except BaseException:
        run.undo()
        raise
    return record


def describe_tries(tries) -> str:
    """'12 shots (too short), 28 shots (26 used, 0 off the music)'."""
    return ", ".join(f"{shots_word(n)} (too short)" if off is None else f"{shots_word(n)} ({used} used, {off} off the music)"
                     for n, used, off in tries)


def shots_word(n: int) -> str:
    return f"{n} shot{'' if n == 1 else 's'}"


def slots_used(trailer, used: list[int]):
    """The trailer with only its slots `used` (in order): the shots a music-timed cut keeps."""
    if len(used) == trailer.length:
        return trailer
    pinned = [used.index(j) for j in trailer.pinned if j in used]
    return dataclasses.replace(trailer, shots=[trailer.shots[j] for j in used],
                               confidence=[trailer.confidence[j] for j in used], length=len(used), pinned=pinned)


def log_off_music(log, plan, changes) -> None:
    if not len(changes.times) and plan.off_change:
        log("music: it has no changes to cut on (a steady sound); the cuts fall where the shots' lengths put them")
    elif plan.off_change:
        log(f"music: {plan.off_change} of {len(plan.on_change)} cuts fall between the music's changes (none lies "
            "where those shots end); the others are on them")


def render_existing(video: str, trailer_path: str, out_path: str, shots_path: str | None = None,
                    music: str | None = None, shot_seconds: float = 2.0, fade: float | None = None,
                    force: bool = False, progress: bool = False, log=None) -> dict:
    """Render a trailer JSON: one written by `trailer` (its slots say every source range), or one written
    by `run` (movie shot indices only) together with the shots file of the same movie; and its contact
    sheet beside the MP4 (same name, .png)."""
    from ..atomic import check_output_path
    from .cuts import fit_shots
    from .music import load_audio, music_changes
    from .outputs import trailer_title, write_picture
    from .timeline import Slot, check_slots, plan_slots

    log = log or (lambda line: print(line, file=sys.stderr))
    sheet_path = Path(out_path).with_suffix(".png")
    check_output_path(out_path, force)
    check_output_path(str(sheet_path), force)
    if fade is not None and not fade >= 0:
        raise InputError(f"--fade must be zero or more seconds, got {fade}")
    info = probe(video)
    path = Path(trailer_path)
    if not path.is_file():
        raise InputError(f"trailer file {path} does not exist")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path} is not a trailer JSON written by `run` or `trailer` ({e})") from None
    if "slots" in record and shots_path is None:
        try:
            slots = [Slot.from_dict(d) for d in record["slots"]]
            fps = parse_fps(record["fps_rational"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            raise InputError(f"{path} has malformed slots ({e})") from None
        if fps != info.fps:
            raise InputError(f"{path} was made from a {float(fps):.3f} fps video; {video} runs at {float(info.fps):.3f} fps")
        check_slots(slots, info.num_frames, str(path))
        if music is None and record.get("music") and Path(record["music"]).is_file():
            music = record["music"]
        if fade is None and isinstance(record.get("fade"), (int, float)) and record["fade"] >= 0:
            fade = record["fade"]
    else:
        if shots_path is None:
            raise InputError(f"{path} holds movie shot indices only; pass --shots, the shots file of {video}")
        shots = load_shots(shots_path)
        shots.check_matches(info, shots_path)
        picks = record.get("shots")
        if not isinstance(picks, list) or not picks or not all(isinstance(i, int) and not isinstance(i, bool) for i in picks):
            raise InputError(f"{path} has no list of movie shot indices under \"shots\"")
        if record.get("num_movie_shots", len(shots)) != len(shots) or max(picks) >= len(shots) or min(picks) < 0:
            raise InputError(f"{path} was made for a movie of {record.get('num_movie_shots')} shots; "
                             f"{shots_path} has {len(shots)}")
        cuts = None
        if music is not None:
            changes = music_changes(load_audio(music))
            plan, total, cut_short = fit_shots([shots.bounds[i][1] - shots.bounds[i][0] for i in picks], changes,
                                               shots.fps)
            cuts = plan.cuts
            if cut_short:
                log(f"music: the trailer's {len(picks)} shots hold less picture than the {changes.duration:.1f} s of "
                    f"music; it ends at {total / float(shots.fps):.1f} s and the music fades out there")
            log_off_music(log, plan, changes)
        slots = plan_slots(shots.bounds, picks, shots.fps, cuts, shot_seconds)
        fps = shots.fps
    rendered = write_picture(Path(out_path), sheet_path, video, slots, fps, trailer_title(video, fps),
                             music=music, fade=fade or 0.0, force=force, progress=progress)
    return {"out": str(out_path), "sheet": str(sheet_path), **rendered, "slots": len(slots), "music": music}


def parse_fps(text: str):
    from fractions import Fraction

    num, den = (int(x) for x in str(text).split("/"))
    return Fraction(num, den)
