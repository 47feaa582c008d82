"""One trailer directory under review: its movie held by the engine, the editor's pins and bans, and
the files rewritten when the editor regenerates.

The directory is the one `ssmp-infer trailer` wrote (shots.json, features.npy, trailer.json, ...). The
editor's choices live in `edits.json` beside them, written atomically on every click, so closing the
browser loses nothing; `ssmp-infer review DIR` picks them up again. A regenerated trailer is exactly
`ssmp-infer run DIR/features.npy --length L --seed S --mode M --pin SLOT:SHOT ... --ban SHOT,...`
(what `run_flags` prints): the engine is the same, and the movie's states are kept between calls, so
each regeneration runs only the decoding rounds.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..errors import InputError
from ..inputs import load_json_file

EDITS = "edits.json"
MAX_CANDIDATES = 8


@dataclass
class Edits:
    """What the editor chose: the trailer's length, seed and mode, slots pinned to shots, shots banned."""

    length: int
    seed: int
    mode: str
    pins: dict[int, int] = field(default_factory=dict)  # slot -> movie shot
    bans: set[int] = field(default_factory=set)

    def to_dict(self) -> dict:
        return {"length": self.length, "seed": self.seed, "mode": self.mode,
                "pins": {str(j): i for j, i in sorted(self.pins.items())}, "bans": sorted(self.bans)}

    @classmethod
    def from_dict(cls, d: dict, num_shots: int) -> "Edits":
        try:
            edits = cls(int(d["length"]), int(d["seed"]), str(d["mode"]), {int(j): int(i) for j, i in d["pins"].items()},
                        {int(i) for i in d["bans"]})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"{EDITS} is not an edits file written by `ssmp-infer review` ({e})") from None
        edits.check(num_shots)
        return edits

    def check(self, num_shots: int) -> None:
        if not 1 <= self.length <= num_shots:
            raise InputError(f"length {self.length} does not fit the movie's {num_shots} shots")
        for j, i in self.pins.items():
            if not (0 <= j < self.length and 0 <= i < num_shots) or i in self.bans:
                raise InputError(f"pin {j}:{i} does not fit a {self.length}-shot trailer of a {num_shots}-shot movie "
                                 "without bans on it")
        if any(not 0 <= i < num_shots for i in self.bans):
            raise InputError(f"a banned shot lies outside the movie's {num_shots} shots")

    def pin_flags(self) -> list[str]:
        return [f"{j}:{i}" for j, i in sorted(self.pins.items())]

    def ban_flags(self) -> list[str]:
        return [",".join(map(str, sorted(self.bans)))] if self.bans else []

    def run_flags(self) -> list[str]:
        """The `ssmp-infer run` options that give the same trailer."""
        flags = ["--length", str(self.length), "--seed", str(self.seed), "--mode", self.mode]
        for pin in self.pin_flags():
            flags += ["--pin", pin]
        for ban in self.ban_flags():
            flags += ["--ban", ban]
        return flags


class ReviewSession:
    """A trailer directory, its engine (the movie's states kept) and the editor's edits; thread-safe."""

    def __init__(self, directory: str | Path, video: str | None = None, model: str | None = None,
                 device: str = "auto", engine_options: dict | None = None, log=print):
        from ..engine import Engine
        from ..video.frames import probe
        from ..video.shots import load_shots

        self.dir = Path(directory)
        self.log = log
        if not self.dir.is_dir():
            raise InputError(f"{self.dir} is not a directory (give the --out directory of `ssmp-infer trailer`)")
        for name in ("trailer.json", "shots.json", "features.npy"):
            if not (self.dir / name).is_file():
                raise InputError(f"{self.dir} has no {name}; give the --out directory of a finished `ssmp-infer trailer`")
        self.record = read_json(self.dir / "trailer.json")
        self.video = video or (self.record.get("video") or {}).get("path")
        if not self.video or not Path(self.video).is_file():
            raise InputError(f"the movie {self.video} of {self.dir} is not there; pass --video with its path")
        self.shots = load_shots(str(self.dir / "shots.json"))
        self.shots.check_matches(probe(self.video), str(self.dir / "shots.json"))
        self.features = np.load(self.dir / "features.npy", allow_pickle=False)
        if self.features.shape[0] != len(self.shots):
            raise InputError(f"{self.dir}/features.npy has {self.features.shape[0]} rows for {len(self.shots)} shots")
        self.fps = Fraction(self.shots.fps)
        self.music = self.record.get("music") if self.record.get("music") and Path(self.record["music"]).is_file() else None
        self.engine = Engine.load(model or self.record.get("model"), device=device, **(engine_options or {}))
        self.lock = threading.Lock()
        start = time.perf_counter()
        self.engine.keep_movie(self.features)  # the movie's pass, once: every regeneration runs only its rounds
        self.log(f"review: the movie's {len(self.shots)} shots read once ({time.perf_counter() - start:.2f} s)")
        edits_path = self.dir / EDITS
        if edits_path.is_file():
            self.edits = Edits.from_dict(read_json(edits_path), len(self.shots))
        else:
            self.edits = Edits(int(self.record["length"]), int(self.record.get("seed", 0)), str(self.record.get("mode", "paper")))
        self.version = 0  # bumped on every regeneration: the page reloads the video and the sheet with it
        self.timing = {}

    # ---- what the page shows

    def state(self) -> dict:
        with self.lock:
            return {
                "title": Path(self.video).stem,
                "fps": float(self.fps),
                "shots": [{"shot": i, "start_s": round(s / float(self.fps), 3), "seconds": round((e - s) / float(self.fps), 3)}
                          for i, (s, e) in enumerate(self.shots.bounds)],
                "slots": [{**slot, "confidence": self.record["confidence"][slot["slot"]]} for slot in self.record["slots"]],
                "trailer_shots": self.record["shots"],
                "duration": self.record.get("duration"),
                "edits": self.edits.to_dict(),
                "run_flags": self.run_flags(),
                "version": self.version,
                "timing": self.timing,
            }

    def run_flags(self) -> list[str]:
        """The `ssmp-infer run` command line (after `run`) that gives the trailer the edits ask for."""
        model = self.engine.source  # "bundled:NAME" or the directory
        flags = [str(self.dir / "features.npy")] + self.edits.run_flags()
        return flags if model == "bundled:default" else flags + ["--model", model]

    # ---- edits: saved at once, applied on regenerate

    def toggle_pin(self, slot: int) -> dict:
        """Pin slot `slot` to the shot it shows now, or un-pin it."""
        with self.lock:
            if not 0 <= slot < len(self.record["shots"]):
                raise InputError(f"the trailer has no slot {slot}")
            if slot in self.edits.pins:
                del self.edits.pins[slot]
            elif slot < self.edits.length:
                self.edits.pins[slot] = int(self.record["shots"][slot])
            self.save_edits()
        return self.state()

    def toggle_ban(self, shot: int) -> dict:
        """Ban `shot` (and drop a pin on it), or lift its ban."""
        with self.lock:
            if not 0 <= shot < len(self.shots):
                raise InputError(f"the movie has no shot {shot}")
            if shot in self.edits.bans:
                self.edits.bans.discard(shot)
            else:
                self.edits.bans.add(shot)
                self.edits.pins = {j: i for j, i in self.edits.pins.items() if i != shot}
            self.save_edits()
        return self.state()

    def set_options(self, length: int | None = None, seed: int | None = None) -> dict:
        with self.lock:
            if length is not None:
                unusable = len(self.controls().bans)
                if not 1 <= length <= len(self.shots) - unusable:
                    raise InputError(f"length {length} does not fit the movie's {len(self.shots)} shots "
                                     f"less its {unusable} banned or black")
                self.edits.length = length
                self.edits.pins = {j: i for j, i in self.edits.pins.items() if j < length}
            if seed is not None:
                self.edits.seed = seed
            self.save_edits()
        return self.state()

    def save_edits(self) -> None:
        write_text_atomic(self.dir / EDITS, json.dumps(self.edits.to_dict(), indent=1) + "\n", force=True)

    # ---- the engine

    def controls(self):
        from ..controls import EditorControls, parse_bans, parse_pins

        pins = parse_pins(self.edits.pin_flags())
        black = {k for k in self.shots.dark_shots if k not in pins.values()}  # no picture; a pin still wins
        return EditorControls(pins, parse_bans(self.edits.ban_flags()) | black)

    def decode(self, seed: int):
        from ..config import DecodeConfig

        return DecodeConfig.from_options(self.edits.mode, None, seed)

    def regenerate(self) -> dict:
        """The trailer with the edits (the cached movie: only the rounds run), its files rewritten."""
        with self.lock:
            start = time.perf_counter()
            trailer = self.engine.generate(self.features, self.edits.length, self.decode(self.edits.seed), self.controls())
            engine_ms = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            self.write_trailer(trailer)
            self.version += 1
            self.timing = {"engine_ms": round(engine_ms, 1), "write_s": round(time.perf_counter() - start, 2)}
            self.log(f"review: regenerated in {engine_ms:.0f} ms ({self.edits.pin_flags() or 'no'} pins, "
                     f"{len(self.edits.bans)} bans), files rewritten in {self.timing['write_s']:.1f} s")
        return self.state()

    def candidates(self, count: int) -> list[dict]:
        """`count` alternatives with the edits, from seeds S, S+1, ...: their shots, side by side."""
        if not 1 <= count <= MAX_CANDIDATES:
            raise InputError(f"candidates: ask for 1 to {MAX_CANDIDATES}, not {count}")
        with self.lock:
            trailers = self.engine.candidates(self.features, count, self.edits.length, self.decode(self.edits.seed),
                                              self.controls())
        return [{"seed": t.seed, "shots": t.shots, "mean_confidence": round(t.mean_confidence, 4)} for t in trailers]

    def write_trailer(self, trailer) -> None:
        """trailer.mp4 and .png, then .otio, .edl and .json for `trailer`, each replaced atomically."""
        from ..video.cuts import fit_shots
        from ..video.music import load_audio, music_changes
        from ..video.outputs import trailer_title, write_edit_files, write_picture
        from ..video.timeline import plan_slots

        cuts = None
        if self.music is not None:
            changes = music_changes(load_audio(self.music))
            plan, _, _ = fit_shots([self.shots.bounds[i][1] - self.shots.bounds[i][0] for i in trailer.shots], changes, self.fps)
            cuts = plan.cuts
        slots = plan_slots(self.shots.bounds, trailer.shots, self.fps, cuts)
        title = trailer_title(self.video, self.fps)
        rendered = write_picture(self.dir / "trailer.mp4", self.dir / "trailer.png", self.video, slots, self.fps, title,
                                 music=self.music, fade=float(self.record.get("fade") or 0.0), force=True)
        record = {**self.record, **trailer.to_dict(), "cuts": cuts, "left_out": None, "cuts_off_music": None,
                  "duration": rendered["seconds"], "num_frames": rendered["frames"],
                  "slots": [s.to_dict(self.fps) for s in slots], "edits": self.edits.to_dict()}
        write_edit_files(self.dir, slots, self.fps, self.video, self.shots.num_frames, title, self.music,
                         trailer.confidence, record, force=True)
        self.record = record


def read_json(path: Path) -> dict:
    value = load_json_file(path, "a JSON object")
    if not isinstance(value, dict):
        raise InputError(f"{path} is not a JSON object")
    return value
