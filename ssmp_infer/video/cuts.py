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
  where the music allows;
- a shot may be left out (`skip`), at a cost above what any cut on the music earns and below a cut off
  it: a shot too short to reach from a change of the music to another is dropped rather than cut off
  the music, and the shots keep SSMP's order.

The trailer's length in slots is chosen with the cuts (`fit_to_music`): while the shots SSMP picks cannot
fill the music on its changes, it asks SSMP for more, and the cuts choose among them.
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
# The cost of leaving out one of SSMP's shots: more than a cut on a change earns (at most 2) or an uneven
# slot costs (at most 4), less than a cut off the music (OFF_CHANGE). Up to 1 more for the shots SSMP
# is surest of, so the least sure go first.
SKIP = 5.0


@dataclass
class CutPlan:
    cuts: list[int]  # trailer frames [0, ..., total]: slot j runs from cuts[j] to cuts[j + 1]
    on_change: list[bool]  # per inner cut: does it lie on a change of the music
    score: float
    used: list[int]  # the shots (indices into those given) that fill the slots, in order

    @property
    def off_change(self) -> int:
        return sum(not on for on in self.on_change)

    @property
    def lengths(self) -> list[int]:
        return [b - a for a, b in zip(self.cuts, self.cuts[1:])]


def fit_cuts(shot_frames: Sequence[int], weights: np.ndarray, fps: float, skip: Sequence[float] | None = None
             ) -> CutPlan | None:
    """The best cut points for slots filled by shots of `shot_frames` frames, in order, over a trailer of
    `len(weights) - 1` frames; `weights[f]` is the strength of the music's change at frame f (0: none).
    With `skip` (a cost per shot), a shot may be left out at its cost; without, every shot fills a slot.
    None when the shots cannot fill the trailer (together shorter than the music)."""
    total = len(weights) - 1
    count = len(shot_frames)
    if count == 0 or total < 1 or sum(shot_frames) < total:
        return None
    min_frames = max(1, round(MIN_SLOT * fps))
    mean = total / count
    longest = max(round(LONGEST * mean), round(4.0 * fps))
    gain = np.where(weights > 0, weights, -OFF_CHANGE)
    gain[total] = 0.0  # the end is not a cut
    score = np.full(total + 1, -np.inf)  # score[f]: the best plan whose slots so far end at frame f
    score[0] = 0.0
    back = np.zeros((count, total + 1), np.int32)  # the slot's length in frames; 0: the shot left out
    for j, frames in enumerate(shot_frames):
        lo, hi = min(min_frames, frames), min(frames, total, longest)
        best = np.full(total + 1, -np.inf)
        for d in range(max(lo, 1), hi + 1):
            cand = score[: total + 1 - d] - LENGTH_WEIGHT * ((d - mean) / mean) ** 2
            view = best[d:]
            better = cand > view
            view[better] = cand[better]
            back[j, d:][better] = d
        best += gain
        if skip is not None:
            left_out = score - skip[j]
            better = left_out > best
            best[better] = left_out[better]
            back[j][better] = 0
        score = best
    if not np.isfinite(score[total]):
        return None
    cuts, used = [total], []
    for j in range(count - 1, -1, -1):
        d = int(back[j, cuts[-1]])
        if d:
            cuts.append(cuts[-1] - d)
            used.append(j)
    cuts.reverse()
    used.reverse()
    assert cuts[0] == 0, cuts
    return CutPlan(cuts, [bool(weights[c] > 0) for c in cuts[1:-1]], float(score[total]), used)


def fit_short(shot_frames: Sequence[int], weights: np.ndarray, fps, skip: Sequence[float] | None = None
              ) -> tuple[CutPlan, int]:
    """Cuts for shots that together are shorter than the music: the trailer ends before it, on one of the
    music's changes that the picture reaches (the latest that lets every cut lie on a change, else the one
    with the fewest cuts off them), or where the picture runs out when no change lies in its second half."""
    picture = sum(shot_frames)
    ends = [int(f) for f in np.flatnonzero(weights[: picture + 1] > 0) if f >= picture / 2][::-1][:ENDS_TRIED] or [picture]
    best: tuple[CutPlan, int] | None = None
    for end in ends:
        plan = fit_cuts(shot_frames, weights[: end + 1], float(fps), skip)
        if plan is not None and (best is None or plan.off_change < best[0].off_change):
            best = (plan, end)
            if plan.off_change == 0:
                break
    assert best is not None  # the shots hold at least `end` frames
    return best


MAX_TRIES = 8  # trailers generated before settling for the plan with the fewest cuts off the music


@dataclass
class MusicFit:
    """A music-timed trailer: SSMP's shots, the ones the cuts use, where they cut, how the length was found."""

    trailer: object  # the engine's Trailer of the length asked for
    plan: CutPlan  # plan.used: the slots of `trailer` that fill the music (the others are left out)
    total: int  # the trailer's frames
    cut_short: bool  # the movie holds less picture than the music: the trailer ends first
    tries: list[tuple[int, int | None, int | None]]  # (shots asked for, shots used, cuts off the music; None: too short)

    @property
    def left_out(self) -> list[int]:
        """The movie shots SSMP picked that no slot uses (too short to reach the music's next change)."""
        used = set(self.plan.used)
        return [s for j, s in enumerate(self.trailer.shots) if j not in used]


def change_frames(weights: np.ndarray) -> np.ndarray:
    """The frames a cut may lie on: the music's changes, its start and its end."""
    total = len(weights) - 1
    return np.unique(np.concatenate([[0, total], np.flatnonzero(weights > 0)]))


def reaches(lengths: Sequence[int], places: np.ndarray, fps: float) -> np.ndarray:
    """For shots of `lengths` frames, the longest slot each can fill from one place to cut to another
    (0: none, the shot is shorter than any stretch between the music's changes)."""
    spans = np.unique((places[None, :] - places[:, None]).ravel())
    spans = spans[spans > 0]
    n = np.asarray(lengths, dtype=np.int64)
    if not len(spans):
        return np.zeros_like(n)
    longest = spans[np.maximum(np.searchsorted(spans, n, side="right") - 1, 0)]
    lo = np.minimum(max(1, round(MIN_SLOT * fps)), n)
    return np.where((longest <= n) & (longest >= lo), longest, 0)


def fit_to_music(generate: Callable[[int], object], bounds: Sequence[tuple[int, int]], changes, fps,
                 most: int | None = None) -> MusicFit:
    """Choose the trailer's length and shots together with its cuts. It starts at one shot per section of
    the music (its changes of colour, long sections split at 4 s, as trailer shots go). While the shots
    SSMP picks cannot fill the music on its changes, it asks for more: as many more as the missing
    picture needs (counting each shot as the longest stretch between changes it can fill) or two for each
    cut off the music, at least an eighth more and at most twice as many; then it looks back for fewer
    shots that still cut only on the music (`fewest_shots`). The cuts leave out the shots too short for
    where they fall, the least confident first. `generate(length)` returns a trailer (`.shots`,
    `.confidence` if any) of at most `most` shots (default: every shot; fewer where some are banned, as
    black ones are)."""
    num_shots = len(bounds) if most is None else most
    weights = changes.at_frames(fps)
    total = len(weights) - 1
    places = change_frames(weights)
    lengths = [b - a for a, b in bounds]
    steady = len(places) == 2  # a steady sound has no changes: every shot is used, nothing to gain
    reach = np.asarray(lengths) if steady else reaches(lengths, places, float(fps))
    length = max(1, min(len(changes.sections) - 1, num_shots))
    best: tuple[object, CutPlan] | None = None
    tries: list[tuple[int, int | None, int | None]] = []

    def plan_for(trailer, fit=fit_cuts):
        frames = [lengths[i] for i in trailer.shots]
        return fit(frames, weights, float(fps), None if steady else skip_costs(trailer))

    for _ in range(MAX_TRIES):
        trailer = generate(length)
        plan = plan_for(trailer)
        tries.append(tried(length, plan))
        if plan is not None and (best is None or plan.off_change < best[1].off_change):
            best = (trailer, plan)
        if (plan is not None and plan.off_change == 0) or length == num_shots:
            break
        filled = int(sum(reach[i] for i in trailer.shots))  # the most these shots fill cut on the changes
        more = -(-(total - filled) * length // max(filled, 1)) if filled < total else 0
        if plan is not None:  # each cut off the music wants a shot or two that reach where it should be
            more = max(more, 2 * plan.off_change)
        length = min(num_shots, length + max(1, -(-length // 8), min(more, length)))
    if best is not None and best[1].off_change == 0:
        best = fewest_shots(best, tries, plan_for, generate)
    if best is not None:
        return MusicFit(*best, total=total, cut_short=False, tries=tries)
    if len(trailer.shots) != num_shots:  # no length tried fills the music: every shot
        trailer = generate(num_shots)
        plan = plan_for(trailer)
        tries.append(tried(num_shots, plan))
        if plan is not None:
            return MusicFit(trailer, plan, total=total, cut_short=False, tries=tries)
    plan, end = plan_for(trailer, fit_short)  # every shot together is shorter than the music
    return MusicFit(trailer, plan, total=end, cut_short=True, tries=tries)


BISECT_TRIES = 4  # trailers generated to look for a shorter length that still cuts only on the music


def fewest_shots(best, tries: list, plan_for, generate):
    """The growth above may overshoot (27 shots with cuts off the music, then 54 with none): between the
    longest length that failed and the one that worked, bisect for the fewest shots that still cut only
    on the music's changes, so slots stay as long as the music and the shots allow (trailers cut every
    ~2 s). SSMP's picks at another length are other shots, so this is a search, not a guarantee."""
    works = best[0].length
    failed = max((n for n, _, off in tries if n < works and off != 0), default=None)
    if failed is None:
        return best
    for _ in range(BISECT_TRIES):
        if works - failed <= max(1, works // 16):
            break
        length = (failed + works) // 2
        trailer = generate(length)
        plan = plan_for(trailer)
        tries.append(tried(length, plan))
        if plan is not None and plan.off_change == 0:
            best, works = (trailer, plan), length
        else:
            failed = length
    return best


def tried(length: int, plan: CutPlan | None) -> tuple[int, int | None, int | None]:
    """A length's line in MusicFit.tries: (shots asked for, shots used, cuts off the music; None: too short)."""
    return (length, None, None) if plan is None else (length, len(plan.used), plan.off_change)


def skip_costs(trailer) -> np.ndarray:
    """Per slot, the cost of leaving its shot out: SKIP, plus up to 1 by SSMP's confidence in it."""
    confidence = getattr(trailer, "confidence", None)
    rank = np.argsort(np.argsort(confidence, kind="stable")) if confidence else np.zeros(len(trailer.shots))
    return SKIP + rank / max(len(rank), 1)


def fit_shots(shot_frames: Sequence[int], changes, fps) -> tuple[CutPlan, int, bool]:
    """Cuts for a trailer whose shots are given (`render` of a `run` trailer, every shot used): the plan,
    the trailer's frames, and whether it ends before the music."""
    weights = changes.at_frames(fps)
    plan = fit_cuts(shot_frames, weights, float(fps))
    if plan is not None:
        return plan, len(weights) - 1, False
    plan, end = fit_short(shot_frames, weights, fps)
    return plan, end, True
