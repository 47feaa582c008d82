"""Where a music-timed trailer cuts: on the music's changes, so that every slot is filled by its shot.

A trailer set to music has one rule an editor never breaks: the picture changes where the music does,
and there is always picture. A shot shorter than its slot would leave black, so the cut points are not
fixed first and filled after: they are chosen among the music's changes (`music.music_changes`: onsets
and section changes, each with a strength) together with the shots, by dynamic programming over the
trailer's frames:

- slot j lasts between `min(MIN_SLOT, shot j)` and shot j's length (never more: no black);
- the last slot ends with the music (the picture lasts as long as the music);
- a cut on a change earns the change's strength; a cut between changes costs OFF_CHANGE (taken only
  when no plan on changes exists, for example music without onsets, a steady tone);
- slots far from the trailer's mean slot length cost a little (LENGTH_WEIGHT), so the rhythm stays even
  where the music allows.

The trailer's length in slots is chosen with the cuts (`pipeline.fit_to_music`): when the shots SSMP picks
cannot fill the music on its changes, it asks for more, shorter shots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

MIN_SLOT = 0.25  # seconds: shorter slots only for shots that are shorter themselves
OFF_CHANGE = 10.0  # the cost of a cut between the music's changes: more than any change earns
LENGTH_WEIGHT = 1.0  # the cost of a slot twice (or zero times) the mean slot length
LONGEST = 3.0  # a slot is at most this many mean slot lengths (or 4 s): bounds the search
ENDS_TRIED = 24  # a trailer shorter than its music tries this many of the last changes as its end


@dataclass
class CutPlan:
    cuts: list[int]  # trailer frames [0, ..., total]: slot j runs from cuts[j] to cuts[j + 1]
    on_change: list[bool]  # per inner cut: does it lie on a change of the music
    score: float

    @property
    def off_change(self) -> int:
        return sum(not on for on in self.on_change)

    @property
    def lengths(self) -> list[int]:
        return [b - a for a, b in zip(self.cuts, self.cuts[1:])]


def fit_cuts(shot_frames: Sequence[int], weights: np.ndarray, fps: float) -> CutPlan | None:
    """The best cut points for slots filled by shots of `shot_frames` frames, in order, over a trailer of
    `len(weights) - 1` frames; `weights[f]` is the strength of the music's change at frame f (0: none).
    None when the shots cannot fill it (together shorter than the music)."""
    total = len(weights) - 1
    count = len(shot_frames)
    if count == 0 or total < 1 or sum(shot_frames) < total:
        return None
    min_frames = max(1, round(MIN_SLOT * fps))
    mean = total / count
    longest = max(round(LONGEST * mean), round(4.0 * fps))
    gain = np.where(weights > 0, weights, -OFF_CHANGE)
    score = np.full(total + 1, -np.inf)
    score[0] = 0.0
    back = np.zeros((count, total + 1), np.int32)
    for j, frames in enumerate(shot_frames):
        lo, hi = min(min_frames, frames), min(frames, total, longest)
        best = np.full(total + 1, -np.inf)
        for d in range(max(lo, 1), hi + 1):
            cand = score[: total + 1 - d] - LENGTH_WEIGHT * ((d - mean) / mean) ** 2
            view = best[d:]
            better = cand > view
            view[better] = cand[better]
            back[j, d:][better] = d
        if j < count - 1:
            best += gain
            best[total] = -np.inf  # inner cuts lie inside the trailer
        score = best
    if not np.isfinite(score[total]):
        return None
    cuts = [total]
    for j in range(count - 1, -1, -1):
        cuts.append(cuts[-1] - int(back[j, cuts[-1]]))
    cuts.reverse()
    assert cuts[0] == 0, cuts
    return CutPlan(cuts, [bool(weights[c] > 0) for c in cuts[1:-1]], float(score[total]))


def fit_short(shot_frames: Sequence[int], weights: np.ndarray, fps) -> tuple[CutPlan, int]:
    """Cuts for shots that together are shorter than the music: the trailer ends before it, on one of the
    music's changes that the picture reaches (the latest that lets every cut lie on a change, else the one
    with the fewest cuts off them), or where the picture runs out when no change lies in its second half."""
    picture = sum(shot_frames)
    ends = [int(f) for f in np.flatnonzero(weights[: picture + 1] > 0) if f >= picture / 2][::-1][:ENDS_TRIED] or [picture]
    best: tuple[CutPlan, int] | None = None
    for end in ends:
        plan = fit_cuts(shot_frames, weights[: end + 1], float(fps))
        if plan is not None and (best is None or plan.off_change < best[0].off_change):
            best = (plan, end)
            if plan.off_change == 0:
                break
    assert best is not None  # the shots hold at least `end` frames
    return best


MAX_TRIES = 8  # trailer lengths tried before settling for the plan with the fewest cuts off the music


@dataclass
class MusicFit:
    """A music-timed trailer: the shots, where they cut, and how the length was found."""

    trailer: object  # the engine's Trailer for the chosen length
    plan: CutPlan
    total: int  # the trailer's frames
    cut_short: bool  # the movie holds less picture than the music: the trailer ends first
    tries: list[tuple[int, int | None]]  # (length, cuts off the music; None: too short)


def fit_to_music(generate: Callable[[int], object], bounds: Sequence[tuple[int, int]], changes, fps) -> MusicFit:
    """Choose the trailer's length together with its cuts. It starts at one shot per section of the music
    (its changes of colour, long sections split at 4 s, as trailer shots go); while the shots SSMP picks
    at that length cannot fill the music on its changes, it asks for more, shorter shots: as many more as
    the missing picture needs, at least an eighth more. `generate(length)` returns a trailer (`.shots`)."""
    num_shots = len(bounds)
    weights = changes.at_frames(fps)
    length = max(1, min(len(changes.sections) - 1, num_shots))
    best: tuple[object, CutPlan] | None = None
    tries: list[tuple[int, int | None]] = []
    for attempt in range(MAX_TRIES):
        trailer = generate(length)
        frames = [bounds[i][1] - bounds[i][0] for i in trailer.shots]
        plan = fit_cuts(frames, weights, float(fps))
        tries.append((length, None if plan is None else plan.off_change))
        if plan is not None and (best is None or plan.off_change < best[1].off_change):
            best = (trailer, plan)
        if (plan is not None and plan.off_change == 0) or length == num_shots:
            break
        missing = len(weights) - 1 - sum(frames)
        more = -(-missing * length // max(sum(frames), 1)) if missing > 0 else 0
        length = num_shots if attempt == MAX_TRIES - 2 else min(num_shots, length + max(1, -(-length // 8), more))
    if best is not None:
        return MusicFit(*best, total=len(weights) - 1, cut_short=False, tries=tries)
    plan, end = fit_short(frames, weights, fps)  # every shot together is shorter than the music
    return MusicFit(trailer, plan, total=end, cut_short=True, tries=tries)


def fit_shots(shot_frames: Sequence[int], changes, fps) -> tuple[CutPlan, int, bool]:
    """Cuts for a trailer whose shots are given (`render` of a `run` trailer): the plan, the trailer's
    frames, and whether it ends before the music."""
    weights = changes.at_frames(fps)
    plan = fit_cuts(shot_frames, weights, float(fps))
    if plan is not None:
        return plan, len(weights) - 1, False
    plan, end = fit_short(shot_frames, weights, fps)
    return plan, end, True
