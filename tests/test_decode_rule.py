"""The paper-mode locking rule, tested so that a wrong rule fails.

A fake backend predicts fixed slot features, built so that slot j's best shot has a chosen probability
p_j every round and no two slots want the same shot. Under the cumulative-confidence rule
(q_j <- min(q_j + p_j, 1), lock with probability q_j, never re-open) a slot is still open after round r
with probability S_r = prod_{k=1..r} (1 - min(k p, 1)), so the share of slots that lock in round r is
S_{r-1} · min(r p, 1). `check_lock_shares` compares that share with what a decoder does, over many
seeds and slots, within a few binomial standard errors. The real decoder must pass it (and match a
reference simulator of the rule draw for draw); simulators of three wrong rules, and the real decoder
with its draws replaced by a fixed threshold, must fail it.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from ssmp_infer import decode
from ssmp_infer.backends import MovieState
from ssmp_infer.config import DecodeConfig
from ssmp_infer.decode import generate, lock_draws
from ssmp_infer.kernels import score_slots_ref

from .helpers import assert_close

TEMPERATURE = 0.1
CPU = torch.device("cpu")

# The statistical check: p values, slots per p (slots interleave the p values), seeds.
P_VALUES = (0.05, 0.2, 0.5)
SLOTS_PER_P = 80
SEEDS = range(50)  # 50 seeds x 80 slots = 4000 slots per p value
Z_TOLERANCE = 4.0  # per cell; ~25 cells, so a correct rule exceeds it anywhere with probability ~0.2%
MIN_EXPECTED = 20  # rounds with fewer expected locks than this merge into one tail cell


# ---------------------------------------------------------------------------------------------------
# A backend with fixed, designed predictions


def prediction_for(probs: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """(J, I) predictions whose softmax(cos / temperature) over one-hot shot features is exactly `probs`.

    With one-hot shots, cos_i is coordinate i of the prediction once it has unit norm. Then
    pred = temperature · (log probs + c) has softmax(pred / temperature) = probs for any c, and c is the
    root of |pred| = 1: I c² + 2 c Σl + Σl² - 1 / temperature² = 0 with l = log probs.
    """
    logp = probs.double().log()
    I = logp.shape[-1]
    s1, s2 = logp.sum(-1, keepdim=True), logp.square().sum(-1, keepdim=True)
    disc = s1.square() - I * (s2 - 1.0 / temperature**2)
    assert (disc >= 0).all(), "temperature too high to reach these probabilities with unit predictions"
    return (temperature * (logp + (-s1 + disc.sqrt()) / I)).float()


def peaked_probs(best_shot: torch.Tensor, p_best: torch.Tensor, num_shots: int) -> torch.Tensor:
    """(J, I): slot j puts p_best[j] on shot best_shot[j] and spreads the rest evenly over the others."""
    J = best_shot.shape[0]
    rest = ((1 - p_best) / (num_shots - 1)).double()
    probs = rest[:, None].expand(J, num_shots).clone()
    probs[torch.arange(J), best_shot] = p_best.double()
    return probs


class FixedPrediction:
    """Stands in for the encoder: every round, every slot predicts the same features."""

    def __init__(self, pred: torch.Tensor):  # (B, J, D)
        self.pred = pred

    def predict(self, slot_masked: torch.Tensor) -> torch.Tensor:
        return self.pred


class RecordingBackend:
    """The `Backend` interface around a predictor; keeps `slot_masked` of every encoder pass."""

    name = "fake"
    device = CPU

    def __init__(self, predictor):
        self.predictor = predictor
        self.masked = []  # (B, J) bool per encoder pass: the slots open at the start of that round

    def prepare(self, movie, movie_valid, refresh_every=None):
        return MovieState(F.normalize(movie.float(), dim=-1), movie_valid, refresh_every=0)

    def step(self, state, slots, slot_masked, slot_valid):
        self.masked.append(slot_masked.clone())
        return self.predictor.predict(slot_masked)


def one_hot_movie(num_shots: int):
    return torch.eye(num_shots)[None], torch.ones(1, num_shots, dtype=torch.bool)


def decode_designed(probs: torch.Tensor, seed: int, max_rounds: int = 32):
    """Run the real decoder on one movie of one-hot shots with slot/shot probabilities `probs` (J, I).

    Returns (DecodeResult, (R, J) bool: the slots open at the start of each of the R rounds).
    """
    J, I = probs.shape
    backend = RecordingBackend(FixedPrediction(prediction_for(probs)[None]))
    movie, valid = one_hot_movie(I)
    config = DecodeConfig(mode="paper", seed=seed, max_rounds=max_rounds)
    result = generate(backend, movie, valid, torch.tensor([J]), config, TEMPERATURE)
    return result, torch.stack([m[0] for m in backend.masked])


def scored(probs: torch.Tensor):
    """(best (J,), prob (J,)) as the decoder scores the designed predictions in round 1."""
    movie, valid = one_hot_movie(probs.shape[1])
    best, prob = score_slots_ref(prediction_for(probs)[None], movie, valid, torch.zeros_like(valid), TEMPERATURE)
    return best[0], prob[0]


# The statistical design: J = I = 240, D = 240; slot j wants shot j with p = P_VALUES[j % 3].
J_STAT = SLOTS_PER_P * len(P_VALUES)
P_OF_SLOT = torch.tensor(P_VALUES).repeat(SLOTS_PER_P)
PROBS_STAT = peaked_probs(torch.arange(J_STAT), P_OF_SLOT, J_STAT)


# ---------------------------------------------------------------------------------------------------
# A reference simulator of the round rule, and wrong variants of it


def simulate_rounds(prob: torch.Tensor, seed: int, rule: str = "cumulative", max_rounds: int = 32):
    """(R, J) slots open at the start of each round, for slots whose best shot has probability prob[j]
    every round and never conflicts, driven by the decoder's own `lock_draws`.

    rule "cumulative" is the paper's; the others are wrong on purpose:
    "no accumulation" locks with probability p (q = p), "fixed threshold" locks exactly when p > 0.3,
    "reopening" redraws every slot every round, so a locked slot whose new draw misses re-opens.
    """
    J = prob.shape[0]
    open_ = torch.ones(J, dtype=torch.bool)
    q = torch.zeros(J)
    rows = []
    for r in range(1, max_rounds + 1):
        if not open_.any():
            break
        rows.append(open_)
        u = lock_draws(seed, r, J, CPU)
        if rule == "cumulative":
            q = torch.where(open_, (q + prob).clamp(max=1.0), q)
            open_ = open_ & ~(u < q)
        elif rule == "no accumulation":
            open_ = open_ & ~(u < prob)
        elif rule == "fixed threshold":
            open_ = open_ & ~(prob > 0.3)
        elif rule == "reopening":
            q = (q + prob).clamp(max=1.0)
            open_ = ~(u < q)
        else:
            raise ValueError(f"unknown rule {rule!r}")
        if r == max_rounds:  # the cap: whatever is open is filled greedily
            open_ = torch.zeros_like(open_)
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------------
# The statistical check


def lock_events(open_by_round: torch.Tensor) -> torch.Tensor:
    """(R, J) bool: slot j locked in round r (open at its start, not at the next one's; all end locked)."""
    after = torch.cat([open_by_round[1:], torch.zeros_like(open_by_round[:1])])
    return open_by_round & ~after


def expected_cells(p: float, n: int):
    """[(first round, last round, P(a slot locks in one of those rounds))] under the cumulative rule.

    Rounds whose expected lock count n · P is large stand alone; the late rounds merge into one tail
    cell; a last cell (expected share 0) takes every lock after the rule must have locked everything.
    """
    shares, still_open, r = [], 1.0, 0
    while still_open > 1e-9:  # after this round no slot is left open (up to 1e-9): q has reached 1
        r += 1
        hazard = min(r * p, 1.0)
        shares.append(still_open * hazard)
        still_open *= 1 - hazard
    last = len(shares)
    tail_from = max(r for r in range(1, last + 1) if n * sum(shares[r - 1 :]) >= MIN_EXPECTED)
    cells = [(r, r, shares[r - 1]) for r in range(1, tail_from)]
    cells.append((tail_from, last, sum(shares[tail_from - 1 :])))
    assert all(n * share >= 5 for _, _, share in cells), "too few slots for a normal approximation"
    cells.append((last + 1, math.inf, 0.0))
    return cells


def binomial_z(observed: int, n: int, share: float) -> float:
    if share in (0.0, 1.0):
        return 0.0 if observed == n * share else math.inf
    return (observed - n * share) / math.sqrt(n * share * (1 - share))


def lock_share_table(run_rounds, prob: torch.Tensor, seeds):
    """Observed against expected lock counts per p value and round: [(p, rounds, observed, expected, z)].

    `run_rounds(seed)` gives the (R, J) slots open at the start of each round of one decode; slot j's
    best shot has probability prob[j] (slots with equal prob are pooled over all seeds).
    """
    events = [lock_events(run_rounds(seed)) for seed in seeds]
    R = max(e.shape[0] for e in events)
    locks = torch.zeros(R, prob.shape[0], dtype=torch.int64)  # lock events per round and slot, all seeds
    for e in events:
        locks[: e.shape[0]] += e
    rows = []
    for p in prob.unique().tolist():
        group = prob == p
        n = int(group.sum()) * len(seeds)
        per_round = locks[:, group].sum(dim=1).tolist()  # per_round[r - 1]: locks in round r
        for first, last, share in expected_cells(p, n):
            observed = sum(per_round[first - 1 : min(last, R)])
            span = f"{first}" if first == last else f"{first}..{'' if last == math.inf else last}"
            rows.append((p, span, observed, n * share, binomial_z(observed, n, share)))
    return rows


def check_lock_shares(run_rounds, prob: torch.Tensor = P_OF_SLOT, seeds=SEEDS, tolerance: float = Z_TOLERANCE):
    """Assert that the share of slots locking in each round matches the cumulative-confidence rule
    within `tolerance` binomial standard errors; returns the largest |z|."""
    rows = lock_share_table(run_rounds, prob, seeds)
    worst = max(abs(z) for *_, z in rows)
    if worst > tolerance:
        table = "\n".join(
            f"  p={p:.3f} round {span:>6}: {obs:6d} locks, expected {exp:8.1f}, z={z:+.1f}"
            for p, span, obs, exp, z in rows
        )
        raise AssertionError(f"lock shares off the cumulative rule (max |z| {worst:.1f} > {tolerance}):\n{table}")
    return worst


# ---------------------------------------------------------------------------------------------------
# Tests


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: intra-op threads only add overhead, and stall badly on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def real_runs():
    """seed -> (DecodeResult, open masks) of the real decoder on the statistical design."""
    return {seed: decode_designed(PROBS_STAT, seed) for seed in SEEDS}


def test_fake_backend_gives_the_designed_probabilities():
    best, prob = scored(PROBS_STAT)
    assert torch.equal(best, torch.arange(J_STAT))
    assert_close(prob, P_OF_SLOT, atol=1e-5, rtol=0)


def test_real_decoder_follows_the_cumulative_rule_draw_for_draw(real_runs):
    _, prob = scored(PROBS_STAT)  # the float32 probabilities the decoder accumulates
    for seed, (result, masks) in real_runs.items():
        assert torch.equal(masks, simulate_rounds(prob, seed)), f"seed {seed}: locks differ from the rule"
        assert not (masks[1:] & ~masks[:-1]).any(), f"seed {seed}: a locked slot re-opened"
        assert torch.equal(result.shots[0], torch.arange(J_STAT))  # no conflicts: every slot on its shot
        assert_close(result.confidence[0], P_OF_SLOT, atol=1e-5, rtol=0)
        assert int(result.rounds[0]) == masks.shape[0]


def test_real_decoder_lock_shares_match_the_cumulative_rule(real_runs):
    check_lock_shares(lambda seed: real_runs[seed][1])


def test_reference_simulator_passes_the_check():
    _, prob = scored(PROBS_STAT)
    check_lock_shares(lambda seed: simulate_rounds(prob, seed))


@pytest.mark.parametrize("rule", ["no accumulation", "fixed threshold", "reopening"])
def test_lock_share_check_fails_for_a_wrong_rule(rule):
    _, prob = scored(PROBS_STAT)
    runs = {seed: simulate_rounds(prob, seed, rule=rule) for seed in SEEDS}
    with pytest.raises(AssertionError, match="lock shares off the cumulative rule"):
        check_lock_shares(runs.__getitem__)
    # far off, not borderline: even leaving out the locks the rule forbids outright (expected share 0,
    # z infinite), some round is more than three tolerances away
    finite = [abs(z) for *_, z in lock_share_table(runs.__getitem__, P_OF_SLOT, SEEDS) if math.isfinite(z)]
    assert max(finite) > 3 * Z_TOLERANCE


def test_lock_share_check_fails_for_the_real_decoder_with_a_fixed_threshold(monkeypatch):
    # every draw 0.3: the real decoder then locks a slot exactly when its q exceeds 0.3
    monkeypatch.setattr(decode, "lock_draws", lambda seed, r, J, device: torch.full((J,), 0.3, device=device))
    with pytest.raises(AssertionError, match="lock shares off the cumulative rule"):
        check_lock_shares(lambda seed: decode_designed(PROBS_STAT, seed)[1], seeds=range(5))


def first_seed(wanted):
    """The first seed whose draws satisfy `wanted(seed)`."""
    return next(seed for seed in range(10_000) if wanted(seed))


def test_conflicts_in_a_real_run_go_to_the_more_confident_claim():
    I = 8
    probs = torch.full((4, I), 0.0)
    # slot: (best shot, p), (second choice, p); slots 0/1 disagree on p, slots 2/3 tie exactly
    design = [((0, 0.55), (4, 0.25)), ((0, 0.65), (5, 0.2)), ((1, 0.6), (2, 0.25)), ((1, 0.6), (2, 0.25))]
    for j, ((a, pa), (b, pb)) in enumerate(design):
        probs[j] = (1 - pa - pb) / (I - 2)
        probs[j, a], probs[j, b] = pa, pb
    best, prob = scored(probs)
    assert best.tolist() == [0, 0, 1, 1] and float(prob[2]) == float(prob[3])
    # a seed where every slot wants to lock in round 1 (q = p >= 0.55), so both conflicts happen
    seed = first_seed(lambda s: bool((lock_draws(s, 1, 4, CPU) < 0.55).all()))
    result, masks = decode_designed(probs, seed)
    # shot 0: slot 1 (0.65) beats slot 0 (0.55); shot 1: slots 2 and 3 tie, the lower slot keeps it
    assert masks[1].tolist() == [True, False, False, True]
    assert not (masks[1:] & ~masks[:-1]).any()
    # the losers were re-masked and lock later on their best shot still free
    assert result.shots[0].tolist() == [4, 0, 1, 2]
    assert_close(result.confidence[0], torch.tensor([0.25, 0.65, 0.6, 0.25]), atol=1e-5, rtol=0)


def test_round_cap_fills_the_open_slots_greedily():
    I, J = 60, 20
    p_best = torch.full((J,), 0.03)
    probs = peaked_probs(torch.arange(J), p_best, I)
    # slots 0 and 1 both want shot 0 (0.04 < 0.05); slot 0's second choice is shot 40
    probs[0] = (1 - 0.04 - 0.035) / (I - 2)
    probs[0, 0], probs[0, 40] = 0.04, 0.035
    probs[1] = (1 - 0.05) / (I - 1)
    probs[1, 0] = 0.05
    best, prob = scored(probs)
    assert best.tolist() == [0, 0] + list(range(2, J))
    # a seed where neither slot 0 nor 1 locks by its draws (q <= 0.1 in two rounds)
    seed = first_seed(lambda s: all(bool((lock_draws(s, r, J, CPU)[:2] > 0.2).all()) for r in (1, 2)))
    result, masks = decode_designed(probs, seed, max_rounds=2)
    assert int(result.rounds[0]) == masks.shape[0] == 2
    assert torch.equal(masks, simulate_rounds(prob, seed, max_rounds=2))  # the draws decide until the cap
    assert masks[1].sum() > J // 2  # most slots were still open: the greedy fill did the work
    # greedy: slot 1 (0.05) takes shot 0 first, slot 0 then takes its best shot still free
    assert result.shots[0].tolist() == [40, 0] + list(range(2, J))
    expected_conf = prob.clone()
    expected_conf[0] = 0.035
    assert_close(result.confidence[0], expected_conf, atol=1e-5, rtol=0)
