"""Give a model saved before training chose a prior weight the weight training now chooses at its end.

    python benchmarks/calibrate_saved.py --model DIR --data ROOT [--seed 0]

ROOT is the data set the model was trained on and SEED the run's `--seed`: the held-out movies are drawn
as that run drew them. DIR/config.json gets `prior_weight`; the weights are not touched. Used on
2026-12-06 for the bundled models (docs/training.md).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ssmp_infer.atomic import write_text_atomic
from ssmp_infer.calibrate import choose_prior_weight
from ssmp_infer.checkpoint import CONFIG, load_checkpoint
from ssmp_infer.config import TrainConfig
from ssmp_infer.data import load_split
from ssmp_infer.selection import split_validation
from ssmp_infer.train import SSMPTraining
from ssmp_infer.trainer import to_device, trailer_scores

def calibrate_saved(model_dir, data_root, seed: int = 0, validation_fraction: float = 0.15, log=print) -> float:
    """The trainer's last step for a model saved before it had one: the held-out movies drawn as
    `train --seed SEED` drew them from DATA/train, the weight chosen on them, config.json rewritten
    (the weights are untouched). Returns the weight."""
    model, _ = load_checkpoint(model_dir, torch.device("cpu"))
    examples = to_device(load_split(data_root, "train", model.cfg.feature_dim), torch.device("cpu"))
    _, held_out = split_validation(examples, validation_fraction, np.random.default_rng(seed))
    method = SSMPTraining(model, TrainConfig(seed=seed))
    model.cfg.prior_weight = 1.0
    weight = choose_prior_weight(model.cfg, lambda: trailer_scores(method, held_out), log=log)
    path = Path(model_dir) / CONFIG
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["model"]["prior_weight"] = weight
    write_text_atomic(path, json.dumps(meta, indent=2) + "\n", force=True)
    return weight


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    calibrate_saved(args.model, args.data, args.seed)
