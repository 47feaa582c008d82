"""A batch of trailer requests through one Engine: grouped by decoding options, one padded run per group.

`Engine.generate_batch` gives each movie the trailer it would get alone, but it takes one DecodeConfig
(mode, rounds, seed) for the whole batch; requests that differ there run as separate groups. A group
that raises (a pin outside its movie, say) is retried one request at a time, so only the bad request
fails. Pure functions of their arguments: the Serve replica and the tests call the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import DecodeConfig
from ..controls import EditorControls
from ..errors import InputError


@dataclass
class Job:
    features: np.ndarray  # (I, D) float32, validated by the frontend
    length: int | None
    decode: DecodeConfig
    controls: EditorControls = field(default_factory=EditorControls)


def _key(decode: DecodeConfig) -> tuple:
    return (decode.mode, decode.steps, decode.max_rounds, decode.seed, decode.refresh_every, decode.kernels)


def run_jobs(engine, jobs: list[Job]) -> list[dict]:
    """One answer per job, in order: {"trailer": Trailer.to_dict()} or {"error": sentence}."""
    groups: dict[tuple, list[int]] = {}
    for k, job in enumerate(jobs):
        groups.setdefault(_key(job.decode), []).append(k)
    answers: list[dict | None] = [None] * len(jobs)
    for members in groups.values():
        chosen = [jobs[k] for k in members]
        try:
            trailers = engine.generate_batch([j.features for j in chosen], [j.length for j in chosen], chosen[0].decode,
                                             [j.controls for j in chosen])
            for k, trailer in zip(members, trailers):
                answers[k] = {"trailer": trailer.to_dict()}
        except InputError:
            for k, job in zip(members, chosen):
                try:
                    answers[k] = {"trailer": engine.generate(job.features, job.length, job.decode, job.controls).to_dict()}
                except InputError as e:
                    answers[k] = {"error": str(e)}
    return answers
