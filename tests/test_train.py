import io
import json
import math
import time

import numpy as np
import pytest
import torch

from ssmp_infer.checkpoint import load_checkpoint
from ssmp_infer.config import MASK_SCHEDULES, ModelConfig, TrainConfig
from ssmp_infer.data import load_split
from ssmp_infer.model import SSMPEncoder, score_logits
from ssmp_infer.selection import (
    BestWeights,
    WeightAverage,
    split_validation,
    validation_scores,
)
from ssmp_infer.synth import write_dataset
from ssmp_infer.train import (
    SelfPacedRatio,
    StepPlan,
    lr_at,
    mask_ceiling,
    masked_loss,
    prior_loss,
    sample_ratios,
    sample_slot_mask,
    to_device,
    train,
)

from .helpers import assert_close

PAPER = TrainConfig()  # t_min 0.1, t_max 1, beta 10, mu_a 0.98, mu_t 0.1


def test_self_paced_update_by_hand():
    pace = SelfPacedRatio(t=0.1, b=0.0)
    pace.update(0.8, PAPER)
    b = 0.02 * 0.8  # mu_a = 0.98 is the weight on the old value
    t_tilde = 0.1 * 0.1 + 0.9 * (0.1 + 0.9 / (1 + math.exp(-10 * (b - 0.5))))
    assert pace.b == pytest.approx(b)
    assert pace.t == pytest.approx(max(0.1, t_tilde))


def test_one_lucky_batch_moves_competence_by_at_most_one_minus_mu_a():
    pace = SelfPacedRatio(t=PAPER.t_min)
    for _ in range(100):
        pace.update(0.0, PAPER)
    before_b, before_t = pace.b, pace.t
    pace.update(1.0, PAPER)
    assert pace.b - before_b <= 1 - PAPER.mu_a + 1e-12
    assert pace.t - before_t < 0.01  # one perfect batch cannot set the ratio for good


def test_self_paced_ratio_never_decreases():
    rng = np.random.default_rng(0)
    pace = SelfPacedRatio(t=PAPER.t_min)
    history = [pace.update(float(a), PAPER) for a in rng.uniform(0, 1, 500)]
    assert all(later >= earlier for earlier, later in zip(history, history[1:]))
    assert PAPER.t_min <= history[0] and history[-1] <= PAPER.t_max
    # a fall in accuracy after a rise leaves the ratio where it was
    pace = SelfPacedRatio(t=PAPER.t_min)
    for _ in range(300):
        pace.update(0.9, PAPER)
    high = pace.t
    for _ in range(300):
        pace.update(0.0, PAPER)
    assert pace.t == high


def test_self_paced_ratio_follows_smoothed_accuracy():
    final = {}
    for accuracy in (0.0, 0.3, 0.5, 0.7, 0.95):
        pace = SelfPacedRatio(t=PAPER.t_min)
        history = [pace.update(accuracy, PAPER) for _ in range(400)]
        final[accuracy] = (history[9], pace.t)
    ratios = [final[a][1] for a in sorted(final)]
    assert all(b > a for a, b in zip(ratios, ratios[1:]))
    assert final[0.0][1] < 0.11  # an incompetent model stays near t_min
    assert final[0.95][1] > 0.95  # a competent one is asked to fill nearly the whole trailer
    assert final[0.95][0] < 0.2  # ... but only after the average has caught up, not after 10 batches


@pytest.mark.parametrize("schedule", MASK_SCHEDULES)
def test_mask_schedules(schedule):
    cfg = TrainConfig(mask_schedule=schedule)
    pace = SelfPacedRatio(t=0.37)
    ceilings = [mask_ceiling(cfg, pace, p) for p in (0.0, 0.5, 1.0)]
    expected = {
        "self-paced": [0.37, 0.37, 0.37],
        "uniform": [1.0, 1.0, 1.0],
        "linear-asc": [0.1, 0.55, 1.0],
        "linear-desc": [1.0, 0.55, 0.1],
    }[schedule]
    assert ceilings == pytest.approx(expected)


@pytest.mark.parametrize("share", [0.0, 0.25, 0.75])
def test_ratios_are_drawn_up_to_the_ceiling_and_a_share_over_the_whole_range(share):
    g = torch.Generator().manual_seed(0)
    ratios = sample_ratios(8000, 0.1, 0.3, 1.0, share, g, "cpu")
    assert float(ratios.min()) >= 0.1 and float(ratios.max()) <= 1.0
    above = float((ratios > 0.3).float().mean())  # only the whole-range share goes past the ceiling
    assert abs(above - share * 0.7 / 0.9) < 0.02
    if share:
        assert float((ratios > 0.95).float().mean()) > 0.005  # decoding's fully masked first round is covered
    at_ceiling = sample_ratios(8000, 0.1, 1.0, 1.0, share, g, "cpu")  # uniform: every trailer over the whole range
    assert abs(float(at_ceiling.mean()) - 0.55) < 0.01


def test_training_draws_its_ratios_with_the_configured_share(tiny_data, tmp_path, monkeypatch):
    """The share a user sets is the share every step draws with (not a constant of the module)."""
    import ssmp_infer.train as train_module

    seen = []
    real = train_module.sample_ratios

    def recording(count, t_min, ceiling, t_max, whole_share, generator, device):
        seen.append(whole_share)
        return real(count, t_min, ceiling, t_max, whole_share, generator, device)

    monkeypatch.setattr(train_module, "sample_ratios", recording)
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.0)
    train(tiny_data, tmp_path / "m", cfg, TrainConfig(lr=1e-3, batch_size=8, epochs=1, whole_range_share=0.3),
          log=io.StringIO())
    assert seen and set(seen) == {0.3}


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(lr=1e-3, warmup_fraction=0.1)
    lrs = [lr_at(s / 100, cfg) for s in range(100)]
    assert lrs[0] < 1e-5 and lrs[10] == pytest.approx(1e-3)
    assert all(b > a for a, b in zip(lrs[:11], lrs[1:11]))
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 1e-5 and lr_at(1.0, cfg) == 0.0


def test_time_budget_plans_the_steps_that_fit():
    plan = StepPlan(planned_steps=10**6, max_minutes=0.05)  # 3 s
    step, replans = 0, []
    while not plan.done(step):
        time.sleep(0.01)
        step += 1
        replanned = plan.after_step(step)
        if replanned is not None:
            replans.append(replanned)
    assert len(replans) == 1 and replans[0] < 10**6
    # the plan was close to what fitted, so the schedule reached (nearly) its end
    assert abs(step - replans[0]) <= 0.25 * replans[0], (step, replans)
    assert plan.progress(step) >= 0.99


def test_slot_mask_counts():
    valid = torch.tensor([[True] * 10, [True] * 3 + [False] * 7, [True] * 1 + [False] * 9])
    g = torch.Generator().manual_seed(0)
    for ratio, expected in ((0.1, [1, 1, 1]), (0.5, [5, 2, 1]), (1.0, [10, 3, 1])):
        mask = sample_slot_mask(valid, torch.full((3,), ratio), g)
        assert mask.sum(dim=1).tolist() == expected  # round(ratio · J), at least one
        assert not (mask & ~valid).any()
    mask = sample_slot_mask(valid, torch.tensor([1.0, 0.1, 1.0]), g)  # each example its own ratio
    assert mask.sum(dim=1).tolist() == [10, 1, 1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    # enough movies that a small model learns the rule rather than memorising its training movies
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, movies=80, seed=5, min_shots=40, max_shots=60, test_fraction=0.2)
    return root


def test_short_training_run_learns(tiny_data, tmp_path):
    """Masked-slot accuracy on held-out movies, fully masked, rises far above chance (1 / shots)."""
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128, dropout=0.0)
    log = io.StringIO()
    # every movie trains and the last weights are kept: this is about learning, not selection
    train_cfg = TrainConfig(lr=2e-3, batch_size=4, epochs=10, seed=0, mask_schedule="uniform", validation_fraction=0)
    summary = train(tiny_data, tmp_path / "model", cfg, train_cfg, log=log)
    assert "loss" in log.getvalue() and "mask" in log.getvalue()

    model, meta = load_checkpoint(tmp_path / "model")
    assert meta["training"]["steps"] == summary["steps"] == meta["training"]["selected_step"] == 10 * 16
    assert meta["training"]["seed"] == 0 and meta["feature_dim"] == 1024

    test = load_split(tiny_data, "test")
    chance = float(np.mean([1 / e.movie.shape[0] for e in test]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        untrained_loss, untrained = masked_loss(type(model)(cfg).eval(), test, 1.0, g)
        trained_loss, trained = masked_loss(model, test, 1.0, g)
    assert untrained < 3 * chance
    assert trained > 3 * chance, (trained, chance, log.getvalue()[-500:])
    assert trained_loss < untrained_loss - 0.2
    assert json.loads(json.dumps(summary))["mask_ceiling"] == 1.0  # uniform: every ratio up to 1


def test_training_scores_slots_against_the_position_keys_decoding_uses(tiny_data):
    """With position keys, training's logits are cos(v̂_j, k_i)/tau + b_i with unmasked slots reading
    k_g: what decoding scores and feeds (a trainer that scored against the bare movie would teach a
    model that decoding then misreads)."""
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0, shot_prior=True, position_keys=True)
    torch.manual_seed(0)
    model = SSMPEncoder(cfg).eval()
    with torch.no_grad():
        model.key_position.weight.normal_()  # zero at init: keys far from the bare movie
    example = load_split(tiny_data, "test")[0]
    got = []
    with torch.no_grad():
        masked_loss(model, [example], 0.5, torch.Generator().manual_seed(3), logits_out=got)
        movie = torch.as_tensor(example.movie, dtype=torch.float32)[None]
        targets = torch.as_tensor(example.targets)[None]
        movie_valid, slot_valid = torch.ones(movie.shape[:2], dtype=torch.bool), torch.ones(targets.shape, dtype=torch.bool)
        masked = sample_slot_mask(slot_valid, torch.tensor([0.5]), torch.Generator().manual_seed(3))  # the same draw
        keys = model.shot_keys(torch.nn.functional.normalize(movie, dim=-1), movie_valid)
        states = model.prepare(movie, movie_valid)
        pred = model.step(states, keys[:, targets[0]], masked, slot_valid)
        want = score_logits(pred, keys, movie_valid, cfg.temperature, states.shot_prior)
        bare = model.step(states, movie[:, targets[0]], masked, slot_valid)
        bare = score_logits(bare, movie, movie_valid, cfg.temperature, states.shot_prior)
    assert 0 < int(masked.sum()) < targets.shape[1]
    assert_close(got[0], want, atol=1e-4, rtol=1e-4)
    assert (got[0] - bare).abs().max() > 1.0


def test_prior_loss_by_hand():
    """-mean over trailer shots of log softmax(b): b = [0, ln 2, 0, -inf (padding)], trailer {1, 2}."""
    prior = torch.tensor([[0.0, math.log(2.0), 0.0, float("-inf")]])
    targets = torch.tensor([[1, 2, -1]])  # -1: a padded slot, ignored
    expected = -(math.log(2 / 4) + math.log(1 / 4)) / 2
    assert abs(float(prior_loss(prior, targets)) - expected) < 1e-6


def test_validation_split_and_best_weights():
    examples = list(range(40))
    rng = np.random.default_rng(0)
    train_part, held = split_validation(examples, 0.1, rng)
    assert len(held) == 4 and sorted(train_part + held) == examples
    assert split_validation(list(range(20)), 0.1, rng) == (list(range(20)), [])  # 2 would be too few

    model = torch.nn.Linear(2, 1)
    best = BestWeights()
    for step, loss in ((10, 5.0), (20, 4.0), (30, 4.5)):
        with torch.no_grad():
            model.weight.fill_(step)
        best.offer(model, step, {"loss": loss, "f1": 0.0})
    assert best.step == 20 and float(best.state["weight"][0, 0]) == 20.0  # a copy, not a view of the live weights


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_saved_weights_are_the_best_validation_point(tiny_data, tmp_path, ema_decay):
    """64 training movies: 6 held out; the checkpoint scores on them exactly what the log called best
    (with a weight average, the averaged weights are what is scored and saved)."""
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128, dropout=0.0)
    log = io.StringIO()
    train_cfg = TrainConfig(lr=2e-3, batch_size=4, epochs=6, seed=0, mask_schedule="uniform", ema_decay=ema_decay)
    train(tiny_data, tmp_path / "model", cfg, train_cfg, log=log)
    model, meta = load_checkpoint(tmp_path / "model")
    training = meta["training"]
    assert training["validation_movies"] == 6 and training["steps"] == 6 * 15  # 58 movies in batches of 4
    losses = [float(line.split("loss ")[1].split()[0]) for line in log.getvalue().splitlines() if line.startswith("validation")]
    assert len(losses) >= 3 and abs(training["validation"]["loss"] - min(losses)) < 1e-3
    # the same held-out movies, drawn as train() draws them, scored again from the saved weights
    examples = to_device(load_split(tiny_data, "train"), torch.device("cpu"))
    _, held_out = split_validation(examples, train_cfg.validation_fraction, np.random.default_rng(train_cfg.seed))
    again = validation_scores(model, held_out, train_cfg.seed)
    assert abs(again["loss"] - training["validation"]["loss"]) < 1e-4
    which = "weight average" if training["validation"]["averaged"] else "weights"
    assert f"saving the {which} of step {training['selected_step']} (lowest loss" in log.getvalue()


def test_weight_average_by_hand_and_the_live_weights_come_back():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)
    average = WeightAverage(model, decay=0.9)
    expected = 0.5
    for n, w in enumerate([1.0, 2.0, 3.0, 4.0, 8.0], start=1):
        with torch.no_grad():
            model.weight.fill_(w)
        average.update(model)
        keep = min(0.9, (1 + n) / (10 + n))  # the ramp: 2/11, 3/12, ...
        expected = keep * expected + (1 - keep) * w
    assert abs(float(average.average["weight"]) - expected) < 1e-6
    with average.swapped_in(model):
        assert abs(float(model.weight) - expected) < 1e-6
    assert float(model.weight) == 8.0


def test_validation_scores_the_live_and_the_averaged_weights_and_keeps_the_lower(tiny_data, tmp_path):
    """The same run with and without a weight average: keeping the average changes no live weight (the
    live losses agree at the steps both runs validated), the averaged losses differ from them, and the
    saved weights are those of the lowest of all."""
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128, dropout=0.0)
    live, averaged, saved = {}, {}, {}
    for decay in (0.0, 0.9):
        log = io.StringIO()
        train(tiny_data, tmp_path / f"m{decay}", cfg,
              TrainConfig(lr=2e-3, batch_size=4, epochs=3, seed=0, mask_schedule="uniform", ema_decay=decay), log=log)
        points = [(int(x.split("step ")[1].split(":")[0].split(",")[0]), float(x.split("loss ")[1].split()[0]), "averaged" in x)
                  for x in log.getvalue().splitlines() if x.startswith("validation")]
        live[decay] = {step: loss for step, loss, avg in points if not avg}
        averaged[decay] = {step: loss for step, loss, avg in points if avg}
        saved[decay] = load_checkpoint(tmp_path / f"m{decay}")[1]["training"]["validation"]
    assert not averaged[0.0] and averaged[0.9].keys() == live[0.9].keys()
    common = live[0.9].keys() & live[0.0].keys()
    assert len(common) >= 2 and all(live[0.9][k] == live[0.0][k] for k in common)
    assert any(abs(live[0.9][k] - averaged[0.9][k]) > 1e-3 for k in live[0.9])  # another model was scored
    lowest = min([*live[0.9].values(), *averaged[0.9].values()])
    assert abs(saved[0.9]["loss"] - lowest) < 1e-3
    assert saved[0.9]["averaged"] == (lowest in averaged[0.9].values() and lowest not in live[0.9].values())
