import io
import json
import math

import numpy as np
import pytest
import torch

from ssmp_infer.checkpoint import load_checkpoint
from ssmp_infer.config import ModelConfig, TrainConfig
from ssmp_infer.data import load_split
from ssmp_infer.synth import write_dataset
from ssmp_infer.train import SelfPacedRatio, lr_at, masked_loss, sample_slot_mask, train

PAPER = TrainConfig()  # t_min 0.1, t_max 1, beta 10, mu_a 0.98, mu_t 0.1


def test_self_paced_update_by_hand():
    pace = SelfPacedRatio(t=0.1, b=0.0)
    pace.update(0.8, PAPER)
    b = 0.98 * 0.8
    t_tilde = 0.1 * 0.1 + 0.9 * (0.1 + 0.9 / (1 + math.exp(-10 * (b - 0.5))))
    assert pace.b == pytest.approx(b)
    assert pace.t == pytest.approx(t_tilde)


def test_self_paced_ratio_never_decreases():
    rng = np.random.default_rng(0)
    pace = SelfPacedRatio(t=PAPER.t_min)
    history = [pace.update(float(a), PAPER) for a in rng.uniform(0, 1, 500)]
    assert all(later >= earlier for earlier, later in zip(history, history[1:]))
    assert PAPER.t_min <= history[0] and history[-1] <= PAPER.t_max
    # a fall in accuracy after a rise leaves the ratio where it was
    pace = SelfPacedRatio(t=PAPER.t_min)
    for _ in range(20):
        pace.update(0.9, PAPER)
    high = pace.t
    for _ in range(20):
        pace.update(0.0, PAPER)
    assert pace.t == high


def test_self_paced_ratio_rises_with_accuracy():
    final = {}
    for accuracy in (0.0, 0.3, 0.5, 0.7, 0.95):
        pace = SelfPacedRatio(t=PAPER.t_min)
        for _ in range(30):
            pace.update(accuracy, PAPER)
        final[accuracy] = pace.t
    ratios = [final[a] for a in sorted(final)]
    assert all(b > a for a, b in zip(ratios, ratios[1:]))
    assert final[0.0] < 0.11  # an incompetent model stays near t_min
    assert final[0.95] > 0.95  # a competent one is asked to fill nearly the whole trailer


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(lr=1e-3, warmup_fraction=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 1e-5


def test_slot_mask_counts():
    valid = torch.tensor([[True] * 10, [True] * 3 + [False] * 7, [True] * 1 + [False] * 9])
    g = torch.Generator().manual_seed(0)
    for ratio, expected in ((0.1, [1, 1, 1]), (0.5, [5, 2, 1]), (1.0, [10, 3, 1])):
        mask = sample_slot_mask(valid, ratio, g)
        assert mask.sum(dim=1).tolist() == expected  # round(ratio · J), at least one
        assert not (mask & ~valid).any()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, movies=30, seed=5, min_shots=40, max_shots=60, test_fraction=0.2)
    return root


def test_short_training_run_learns(tiny_data, tmp_path):
    """Masked-slot accuracy on held-out movies, fully masked, rises far above chance (1 / shots)."""
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128, dropout=0.0)
    log = io.StringIO()
    summary = train(tiny_data, tmp_path / "model", cfg, TrainConfig(lr=2e-3, batch_size=4, epochs=25, seed=0), log=log)
    assert "loss" in log.getvalue() and "mask" in log.getvalue()

    model, meta = load_checkpoint(tmp_path / "model")
    assert meta["training"]["steps"] == summary["steps"] == 25 * 6
    assert meta["training"]["seed"] == 0 and meta["feature_dim"] == 1024

    test = load_split(tiny_data, "test")
    chance = float(np.mean([1 / e.movie.shape[0] for e in test]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        _, untrained = masked_loss(type(model)(cfg).eval(), test, ratio=1.0, generator=g)
        _, trained = masked_loss(model, test, ratio=1.0, generator=g)
    assert untrained < 3 * chance
    assert trained > 5 * chance, (trained, chance, log.getvalue()[-500:])
    assert json.loads(json.dumps(summary))["mask_ratio"] >= 0.1
