"""Editor controls: pinned shots, banned shots, candidate trailers.

A pin `SLOT:SHOT` fixes a trailer slot on a movie shot before decoding starts: the slot is locked
from round one and its shot is taken, so the decoder predicts every other slot around it, before and
after (SSMP's bidirectional encoder reads the pinned shot as context). A ban removes shots from the
choice but not from the movie: the encoder still reads them, and they still count in each slot's
softmax, so a ban changes which shot a slot gets, never how the model sees the film.

The one place pins and bans are parsed and checked; the CLI, the Python API and the server all come
through here, so a bad pin is the same sentence everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import SEED_LIMIT
from .errors import InputError

# A ban list bigger than any movie is a typo (`0-1000000000`), not a wish: refuse before expanding it.
MAX_BANNED = 1_000_000
# Candidates share one batch; more than this is a request for a sampler, not an editor's shortlist.
MAX_CANDIDATES = 64


@dataclass
class EditorControls:
    pins: dict[int, int] = field(default_factory=dict)  # slot -> movie shot
    bans: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.pins or self.bans)

    def check(self, num_shots: int, length: int) -> None:
        """Refuse, in one sentence, pins and bans that do not fit a movie of `num_shots` and a trailer of
        `length` slots."""
        for slot, shot in sorted(self.pins.items()):
            if not 0 <= slot < length:
                raise InputError(f"pin {slot}:{shot}: slot {slot} is outside the trailer's slots 0..{length - 1}")
            if not 0 <= shot < num_shots:
                raise InputError(f"pin {slot}:{shot}: shot {shot} is outside the movie's shots 0..{num_shots - 1}")
            if shot in self.bans:
                raise InputError(f"pin {slot}:{shot}: shot {shot} is also banned")
        outside = sorted(b for b in self.bans if not 0 <= b < num_shots)
        if outside:
            raise InputError(f"banned shot {outside[0]} is outside the movie's shots 0..{num_shots - 1}")
        left = num_shots - len(self.bans)
        if length > left:
            raise InputError(
                f"a trailer of {length} shots needs {length} distinct shots, but only {left} of the movie's "
                f"{num_shots} are not banned"
            )

    def tensors(self, num_shots: int, length: int, slots: int, shots: int):
        """(pins (slots,) int64 with -1 where free, banned (shots,) bool), padded to a batch's sizes."""
        import torch  # here, not at the top: the CLI parses pins before it loads torch

        self.check(num_shots, length)
        pins = torch.full((slots,), -1, dtype=torch.int64)
        for slot, shot in self.pins.items():
            pins[slot] = shot
        banned = torch.zeros(shots, dtype=torch.bool)
        if self.bans:
            banned[torch.tensor(sorted(self.bans))] = True
        return pins, banned


def _integer(text: str, what: str) -> int:
    if not re.fullmatch(r"\s*\d{1,12}\s*", text):
        raise InputError(f"{what}: {text.strip()!r} is not a shot or slot number (a non-negative integer)")
    return int(text)


def parse_pins(specs: list[str] | None) -> dict[int, int]:
    """`["3:120", "0:7"]` -> {3: 120, 0: 7}; two pins on one slot or one shot are refused."""
    pins: dict[int, int] = {}
    for spec in specs or []:
        slot_text, sep, shot_text = spec.partition(":")
        if not sep:
            raise InputError(f"pin {spec!r} is not SLOT:SHOT (for example 0:120)")
        slot, shot = _integer(slot_text, f"pin {spec!r}"), _integer(shot_text, f"pin {spec!r}")
        if slot in pins:
            raise InputError(f"slot {slot} is pinned twice (to shots {pins[slot]} and {shot})")
        if shot in pins.values():
            raise InputError(f"shot {shot} is pinned to two slots; a shot appears in a trailer at most once")
        pins[slot] = shot
    return pins


def parse_bans(specs: list[str] | None) -> frozenset[int]:
    """`["100-140,512", "7"]` -> the shots 100..140 (inclusive), 512 and 7."""
    bans: set[int] = set()
    for spec in specs or []:
        for part in spec.split(","):
            if not part.strip():
                continue
            low_text, sep, high_text = part.partition("-")
            low = _integer(low_text, f"ban {part.strip()!r}")
            high = _integer(high_text, f"ban {part.strip()!r}") if sep else low
            if high < low:
                raise InputError(f"ban range {part.strip()!r} runs backwards; write LOW-HIGH")
            if high - low + 1 + len(bans) > MAX_BANNED:
                raise InputError(f"ban {part.strip()!r} names more than {MAX_BANNED:,} shots")
            bans.update(range(low, high + 1))
    return frozenset(bans)


def check_candidates(count: int, mode: str, seed: int) -> int:
    if not 1 <= count <= MAX_CANDIDATES:
        raise InputError(f"--candidates must be from 1 to {MAX_CANDIDATES}, got {count}")
    if seed + count > SEED_LIMIT:
        raise InputError(f"seeds {seed}..{seed + count - 1} of the candidates pass 2^63 - 1; give a smaller --seed")
    if count > 1 and mode != "paper":
        raise InputError(
            f"--mode {mode} is deterministic: every seed gives the same trailer; candidates need --mode paper"
        )
    return count
