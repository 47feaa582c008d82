import io
import json
import math

import numpy as np
import pytest
import torch

from ssmp_infer import Engine
from ssmp_infer.checkpoint import load_checkpoint
from ssmp_infer.config import MASK_SCHEDULES, ModelConfig, TrainConfig
from ssmp_infer.data import load_split, pad_batch, pad_targets
from ssmp_infer.model import SSMPEncoder, score_logits
from ssmp_infer.selection import BestWeights, WeightAverage, selection_key, split_validation
from ssmp_infer.synth import write_dataset
from ssmp_infer.train import (
    SelfPacedRatio,
    SSMPTraining,
    mask_ceiling,
    masked_loss,
    prior_loss,
    sample_ratios,
    sample_slot_mask,
    train,
)
from ssmp_infer.trainer import lr_at, to_device, trailer_scores

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


def test_training_steps_see_the_movies_with_the_configured_share_of_shots_dropped(tiny_data, tmp_path, monkeypatch):
    """--shot-drop reaches every step: the movies a step trains on hold every trailer shot and about the
    configured share fewer of the others than the files (0: the files' shots, all of them)."""
    import ssmp_infer.trainer as trainer

    whole = {e.name: e for e in load_split(tiny_data, "train")}
    real, seen = trainer.crop, []

    def recording(examples, max_shots, rng):
        seen.extend(examples)
        return real(examples, max_shots, rng)

    monkeypatch.setattr(trainer, "crop", recording)
    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.0)
    for rate in (0.0, 0.5):
        seen.clear()
        train(tiny_data, tmp_path / f"m{rate}", cfg, TrainConfig(lr=1e-3, batch_size=8, epochs=1, shot_drop=rate,
                                                                  validation_fraction=0), log=io.StringIO())
        assert len(seen) == len(whole)
        others = dropped = 0
        for e in seen:
            source = whole[e.name]
            kept = e.movie.cpu().numpy()
            np.testing.assert_array_equal(kept[e.targets.cpu().numpy()], source.movie[source.targets])
            others += len(source.movie) - len(set(source.targets.tolist()))
            dropped += len(source.movie) - len(kept)
        assert abs(dropped / others - rate) < 0.05


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(lr=1e-3, warmup_fraction=0.1)
    lrs = [lr_at(s / 100, cfg) for s in range(100)]
    assert lrs[0] < 1e-5 and lrs[10] == pytest.approx(1e-3)
    assert all(b > a for a, b in zip(lrs[:11], lrs[1:11]))
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] < 1e-5 and lr_at(1.0, cfg) == 0.0


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
    from ssmp_infer.data import Example

    def movies(count, slots):
        return [Example(f"m{k}", None, None, np.zeros(slots, dtype=np.int64)) for k in range(count)]

    examples = movies(40, 10)
    rng = np.random.default_rng(0)
    train_part, held = split_validation(examples, 0.15, rng)
    assert len(held) == 6 and sorted(e.name for e in train_part + held) == sorted(e.name for e in examples)
    assert split_validation(movies(20, 10), 0.15, rng)[1] == []  # 3 would be too few
    # CMTD-sized trailers (70 slots): the held-out set stops at the movie that brings it to 600 slots
    assert len(split_validation(movies(176, 70), 0.15, rng)[1]) == 9
    assert len(split_validation(movies(176, 500), 0.15, rng)[1]) == 4  # never fewer than four movies

    model = torch.nn.Linear(2, 1)
    best = BestWeights()
    for step, f1, aa in ((10, 0.2, 0.9), (20, 0.3, 0.5), (30, 0.2, 0.95), (40, 0.3, 0.5)):
        with torch.no_grad():
            model.weight.fill_(step)
        best.offer(model, step, {"f1": f1, "aa": aa, "key": selection_key({"f1": f1, "aa": aa})})
    # 0.3 + 0.2·0.5 = 0.40 beats 0.2 + 0.18 and 0.2 + 0.19; the later tie does not replace it
    assert best.step == 20 and float(best.state["weight"][0, 0]) == 20.0  # a copy, not a view of the live weights
    assert selection_key({"f1": 0.1, "aa": None}) == pytest.approx(0.1 + 0.2 * 0.5)


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



def validation_lines(log: str) -> list[tuple[int, bool, float, float | None]]:
    """(step, averaged, F1, AA) of every validation line of a training log."""
    out = []
    for line in log.splitlines():
        if line.startswith("validation at step") and ": F1 " in line:
            head, rest = line.split(": F1 ")
            f1, aa = rest.split("  AA ")
            aa = aa.split()[0]
            out.append((int(head.split("step ")[1].split(",")[0]), "averaged" in head, float(f1),
                        None if aa == "-" else float(aa)))
    return out


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_saved_weights_make_the_trailers_the_log_called_best(tiny_data, tmp_path, ema_decay, monkeypatch):
    """The checkpoint's held-out trailers, made again from the saved weights, score exactly what the
    log called the best point (with a weight average, the averaged weights are scored and saved)."""
    monkeypatch.setattr("ssmp_infer.selection.VALIDATION_TIME_SHARE", 1.0)  # every point, however slow here
    cfg = ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128, dropout=0.0)
    log = io.StringIO()
    train_cfg = TrainConfig(lr=2e-3, batch_size=4, epochs=6, seed=0, mask_schedule="uniform", ema_decay=ema_decay,
                            patience=0)
    train(tiny_data, tmp_path / "model", cfg, train_cfg, log=log)
    model, meta = load_checkpoint(tmp_path / "model")
    training = meta["training"]
    assert training["validation_movies"] == 10 and training["steps"] == 6 * 14  # 54 movies in batches of 4
    points = validation_lines(log.getvalue())
    assert len({p[0] for p in points}) >= 3 and any(p[1] for p in points) == bool(ema_decay)
    best_key = max(selection_key({"f1": f1, "aa": aa}) for _, _, f1, aa in points)
    assert training["validation"]["key"] == pytest.approx(best_key, abs=1e-9)
    # the same held-out movies, drawn as train() draws them, decoded again from the saved weights
    examples = to_device(load_split(tiny_data, "train"), torch.device("cpu"))
    _, held_out = split_validation(examples, train_cfg.validation_fraction, np.random.default_rng(train_cfg.seed))
    again = trailer_scores(SSMPTraining(model, train_cfg), held_out)
    assert again["f1"] == pytest.approx(training["validation"]["f1"]) and again["key"] == pytest.approx(best_key)
    which = "weight average" if training["validation"]["averaged"] else "weights"
    assert f"saving the {which} of step {training['selected_step']} (the best trailers" in log.getvalue()


class ScriptedScores:
    """Stands in for the held-out trailers' scores with a script of keys, one per validation call, and
    remembers the weights each call saw (what a selection rule must give back)."""

    def __init__(self, keys):
        self.keys, self.seen = list(keys), []

    def __call__(self, method, examples, stop=None, weights=None):
        assert weights is None  # these tests' models have no shot prior: one decoding weight
        key = self.keys[min(len(self.seen), len(self.keys) - 1)]
        self.seen.append({k: v.detach().clone() for k, v in method.model.state_dict().items()})
        return {"f1": key, "aa": None, "key": key}


def test_selection_keeps_the_best_point_not_the_last(tiny_data, tmp_path, monkeypatch):
    import ssmp_infer.trainer as trainer

    script = ScriptedScores([0.1, 0.2, 0.5, 0.3, 0.2, 0.1] + [0.0] * 100)  # best: the third call
    monkeypatch.setattr(trainer, "trailer_scores", script)
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0)
    train(tiny_data, tmp_path / "m", cfg, TrainConfig(lr=2e-3, batch_size=4, epochs=4, ema_decay=0.0, patience=0),
          log=io.StringIO())
    model, meta = load_checkpoint(tmp_path / "m")
    assert len(script.seen) >= 5 and meta["training"]["validation"]["key"] == 0.5
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, script.seen[2][name])  # the third point's weights, not the last
    assert any((script.seen[2][k] != script.seen[-1][k]).any() for k in script.seen[2])  # training moved on


def test_patience_ends_a_run_that_stopped_improving(tiny_data, tmp_path, monkeypatch):
    import ssmp_infer.trainer as trainer

    script = ScriptedScores([0.1, 0.3] + [0.2] * 100)  # nothing beats the second point
    monkeypatch.setattr(trainer, "trailer_scores", script)
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0)
    log = io.StringIO()
    summary = train(tiny_data, tmp_path / "m", cfg,
                    TrainConfig(lr=2e-3, batch_size=4, epochs=20, ema_decay=0.0, patience=3), log=log)
    training = load_checkpoint(tmp_path / "m")[1]["training"]
    assert summary["stopped"] == training["stopped"] == "patience"
    assert len(script.seen) == 2 + 3  # the best point, then three that did not beat it
    assert training["steps"] < training["max_steps"] and "--patience" in log.getvalue()


class FakeClock:
    """A clock that moves only when told: each training step takes the time the test says."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_schedule_follows_a_clock_that_speeds_up_and_slows_down(tiny_data, tmp_path, monkeypatch):
    """Steps of 0.1 s, then 2 s (another job starts), then 0.05 s (the machine frees up): warm-up and decay
    follow the elapsed share of the budget, and the run ends within it. A schedule planned from the
    first steps' rate would end the 1-minute run after ~6 of its 60 s (the slow steps spend the
    planned steps' time) or reach its end long before the clock does."""
    clock, seen = FakeClock(), []
    real_loss = SSMPTraining.loss

    def timed_loss(self, examples, progress):
        step = len(seen)
        clock.now += 0.1 if step < 40 else 2.0 if step < 50 else 0.05
        seen.append((clock.now, progress))
        return real_loss(self, examples, progress)

    monkeypatch.setattr(SSMPTraining, "loss", timed_loss)
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0)
    log = io.StringIO()
    train(tiny_data, tmp_path / "m", cfg, TrainConfig(lr=1e-3, batch_size=4, epochs=1000, max_minutes=1.0, ema_decay=0.0, patience=0),
          log=log, clock=clock)
    start = 1000.0
    training = load_checkpoint(tmp_path / "m")[1]["training"]
    assert training["stopped"] == "budget" and clock.now - start <= 60.0
    assert clock.now - start >= 60.0 - 3.0  # used the budget: the reserve (validation + save) is ~1 s here
    # the progress each step ran at is the elapsed share of the budget before it (plus the reserve)
    for (now, progress), (before, _) in zip(seen[1:], seen):
        assert (before - start) / 60.0 <= progress <= (before - start + 1.0) / 60.0 + 1e-9
    assert seen[-1][1] > 0.9  # the decay reached its end
    # warm-up ended at 10% of the time (step ~50 here), not at 10% of any planned step count
    warm = [k for k, (_, p) in enumerate(seen) if p < 0.1]
    assert 40 <= len(warm) <= 50
    assert "% of 1 min" in log.getvalue()


def test_a_validation_slowed_by_another_job_cannot_carry_the_run_past_its_budget(tiny_data, tmp_path, monkeypatch):
    """Steps of 0.1 s; the first validation decodes a held-out movie in 0.05 s, every later one in 8 s
    (the machine got busy): the validation under way stops when the budget is spent, its point is
    dropped, and the run saves within the budget plus one movie's trailer."""
    clock, calls = FakeClock(), []
    real_loss, real_trailers = SSMPTraining.loss, SSMPTraining.trailers

    def timed_loss(self, examples, progress):
        clock.now += 0.1
        return real_loss(self, examples, progress)

    def slow_trailers(self, examples):
        for trailer in real_trailers(self, examples):  # the time each movie's trailer took
            calls.append(1)
            clock.now += 0.05 if len(calls) <= 10 else 8.0  # 10 held-out movies, one at a time
            yield trailer

    monkeypatch.setattr(SSMPTraining, "loss", timed_loss)
    monkeypatch.setattr(SSMPTraining, "trailers", slow_trailers)
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0)
    log = io.StringIO()
    train(tiny_data, tmp_path / "m", cfg, TrainConfig(lr=1e-3, batch_size=4, epochs=1000, max_minutes=1.0, ema_decay=0.0),
          log=log, clock=clock)
    training = load_checkpoint(tmp_path / "m")[1]["training"]
    assert 60.0 - 8.0 <= clock.now - 1000.0 <= 60.0 + 8.0, clock.now - 1000.0
    assert training["stopped"] == "budget" and "stopped, the budget ran out" in log.getvalue()
    assert set(calls) == {1} and 10 < len(calls) < 20  # movie by movie; the second validation cut short
    first = validation_lines(log.getvalue())[0][0]
    assert training["selected_step"] == first  # the one point that finished, not the cut-short one


def test_the_set_level_term_trains_the_shot_prior(tiny_data, monkeypatch):
    """The loss's gradient on the shot prior's parameters is the slot loss's plus the set-level term's
    (`prior_loss` of the movie's b against the trailer's shots): a term wired to nothing adds nothing."""
    import ssmp_infer.train as train_module

    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0, shot_prior=True, context_prior=True)
    torch.manual_seed(0)
    model = SSMPEncoder(cfg)
    with torch.no_grad():
        model.shot_head.weight.normal_()  # zero at init; the context branch's output too
        model.context_prior.mlp[-1].weight.normal_()
    example = to_device(load_split(tiny_data, "train")[:2], torch.device("cpu"))
    params = [model.shot_head.weight, model.context_prior.mlp[-1].weight]

    def grads(weight):
        monkeypatch.setattr(train_module, "PRIOR_LOSS_WEIGHT", weight)
        model.zero_grad()
        loss, _ = masked_loss(model, example, 0.5, torch.Generator().manual_seed(1))
        loss.backward()
        return [p.grad.clone() for p in params]

    with_term, without = grads(1.0), grads(0.0)
    model.zero_grad()
    movie, movie_valid = pad_batch([e.movie for e in example])
    states = model.prepare(movie, movie_valid)
    prior_loss(states.shot_prior, pad_targets([e.targets for e in example])).backward()
    for a, b, p in zip(with_term, without, params):
        assert p.grad.abs().max() > 1e-4
        torch.testing.assert_close(a - b, p.grad, atol=1e-5, rtol=1e-4)


def test_feature_noise_keeps_the_targets_and_moves_each_shot_by_its_share():
    from ssmp_infer.data import Example
    from ssmp_infer.trainer import augment

    movie = torch.randn(50, 64) * torch.linspace(0.1, 10, 50)[:, None]  # rows of very different norms
    example = Example("m", movie, np.zeros((3, 64)), torch.tensor([3, 1, 7]))
    g = torch.Generator().manual_seed(0)
    assert augment([example], 0.0, g)[0] is example
    noisy = augment([example], 0.25, g)[0]
    assert noisy.targets is example.targets and noisy.movie.shape == movie.shape
    ratio = (noisy.movie - movie).norm(dim=-1) / movie.norm(dim=-1)
    torch.testing.assert_close(ratio, torch.full((50,), 0.25), atol=1e-5, rtol=1e-5)
    again = augment([example], 0.25, g)[0]
    assert not torch.equal(again.movie, noisy.movie)  # fresh noise every step


def test_shot_drop_keeps_every_trailer_shot_and_leaves_out_its_share_of_the_others_anew_each_time():
    from ssmp_infer.data import Example
    from ssmp_infer.trainer import drop_shots

    movie = torch.arange(2000, dtype=torch.float32)[:, None].repeat(1, 8)  # row i holds i: where a row came from
    targets = torch.tensor([1500, 3, 700, 3, 1999])  # trailer order, a shot named twice
    example = Example("m", movie, None, targets)
    g = torch.Generator().manual_seed(0)
    assert drop_shots([example], 0.0, g)[0] is example
    first, second = (drop_shots([example], 0.3, g)[0] for _ in range(2))
    for kept in (first, second):
        origin = kept.movie[:, 0].long()
        assert torch.equal(kept.movie[kept.targets], movie[targets])  # each slot still names its shot
        assert torch.all(origin[1:] > origin[:-1])  # film order kept
        others = 2000 - 4
        assert abs((2000 - len(kept.movie)) / others - 0.3) < 0.04
    assert not torch.equal(first.movie[:, 0][:200], second.movie[:, 0][:200])  # other shots each time


def test_crops_keep_the_trailer_shots_inside_in_order_and_where_they_lie():
    from ssmp_infer.data import Example
    from ssmp_infer.trainer import crop

    movie = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 8)  # row i holds i: where a row came from
    targets = torch.tensor([70, 5, 42, 99, 43, 10])  # trailer order, not movie order
    example = Example("m", movie, None, targets)
    rng = np.random.default_rng(0)
    assert crop([example], 0, rng)[0] is example and crop([example], 100, rng)[0] is example
    starts = set()
    for _ in range(200):
        (c,) = crop([example], 30, rng)
        start, total = c.window
        starts.add(start)
        assert total == 100 and 0 <= start <= 70 and c.movie.shape == (30, 8)
        torch.testing.assert_close(c.movie[:, 0], torch.arange(start, start + 30, dtype=torch.float32))
        inside = [int(t) for t in targets if start <= t < start + 30]
        assert inside and [int(t) + start for t in c.targets] == inside  # trailer order kept, re-indexed
    assert len(starts) > 20  # windows all over the movie


def test_a_window_gives_a_crop_the_positions_it_has_in_the_whole_movie():
    from ssmp_infer.model import position_features

    full = position_features(torch.ones(1, 500, dtype=torch.bool))
    for start in (0, 137, 300):
        cropped = position_features(torch.ones(1, 200, dtype=torch.bool), torch.tensor([[start, 500]]))
        torch.testing.assert_close(cropped, full[:, start : start + 200])
    plain = position_features(torch.ones(1, 200, dtype=torch.bool))
    assert (plain - full[:, 137:337]).abs().max() > 0.1  # without the window a crop would look like a movie


@pytest.mark.parametrize("keys, chosen", [
    ({1.0: 0.5, 1.5: 0.3, 2.0: 0.6, 3.0: 0.6, 4.0: 0.2}, 2.0),  # the best key; a tie goes to the smaller weight
    ({1.0: 0.5, 1.5: 0.3, 2.0: 0.4, 3.0: 0.1, 4.0: 0.2}, 1.0),  # none beats the scores as trained
    ({1.0: 0.5, 1.5: 0.3, 2.0: 0.4, 3.0: 0.7, 4.0: 0.2}, 3.0),  # a validation point's own second weight
])
def test_the_prior_weight_is_the_one_whose_held_out_trailers_score_best(tiny_data, tmp_path, monkeypatch, keys, chosen):
    """Every validation point scores the held-out trailers at weights 1 and 3; after choosing its weights,
    training decodes the held-out movies at the other prior weights and saves the best one in the
    model's config, which the engine then decodes with."""
    import ssmp_infer.trainer as trainer

    seen = []

    def scores(method, examples, stop=None, weights=None):
        seen.append(weights or method.model.cfg.prior_weight)
        if weights:
            return {w: {"f1": keys[w], "aa": None, "key": keys[w]} for w in weights}
        weight = method.model.cfg.prior_weight
        return {"f1": keys[weight], "aa": None, "key": keys[weight]}

    monkeypatch.setattr(trainer, "trailer_scores", scores)
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0, shot_prior=True, prior_weight=3.0)
    log = io.StringIO()
    train(tiny_data, tmp_path / "m", cfg, TrainConfig(lr=2e-3, batch_size=4, epochs=2, ema_decay=0.0, patience=0), log=log)
    model, meta = load_checkpoint(tmp_path / "m")
    points = len(seen) - 3  # the run's validation points, then the three weights they did not score
    assert points >= 2 and set(seen[:points]) == {(1.0, 3.0)} and seen[points:] == [1.5, 2.0, 4.0]
    assert model.cfg.prior_weight == chosen and meta["training"]["prior_weight"] == chosen
    assert f"prior weight {chosen:g} for decoding" in log.getvalue()
    assert Engine.load(tmp_path / "m", device="cpu").model_config.prior_weight == chosen


def test_validation_decodes_every_weight_from_one_movie_pass(tiny_data):
    """SSMP's held-out trailers at several prior weights share each movie's pass, and each equals the
    trailer decoded alone at that weight (what eval gives a model saved with it)."""
    torch.manual_seed(0)
    model = SSMPEncoder(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0, shot_prior=True)).eval()
    with torch.no_grad():  # a prior large enough that the weight changes trailers
        model.shot_head.bias.zero_()
        model.shot_head.weight.normal_(0, 2.0)
    method = SSMPTraining(model, TrainConfig(seed=3))
    examples = to_device(load_split(tiny_data, "test")[:6], torch.device("cpu"))
    together = list(method.trailers(examples, (1.0, 3.0)))
    alone = {}
    for w in (1.0, 3.0):
        model.cfg.prior_weight = w
        alone[w] = list(method.trailers(examples))
    assert [t[0] for t in together] == alone[1.0] and [t[1] for t in together] == alone[3.0]
    assert alone[1.0] != alone[3.0]  # the weight mattered here, so the check above is not empty


def test_a_model_without_a_shot_prior_keeps_weight_one(tiny_data, tmp_path):
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0)
    log = io.StringIO()
    train(tiny_data, tmp_path / "m", cfg, TrainConfig(lr=2e-3, batch_size=4, epochs=1, ema_decay=0.0), log=log)
    assert load_checkpoint(tmp_path / "m")[0].cfg.prior_weight == 1.0 and "prior weight" not in log.getvalue()
