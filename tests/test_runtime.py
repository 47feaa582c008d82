"""The runtime: movie-state reuse, finished movies leaving the batch, length buckets."""

import numpy as np
import pytest
import torch

from ssmp_infer.backends import TorchBackend
from ssmp_infer.config import DecodeConfig, ModelConfig
from ssmp_infer.data import pad_batch
from ssmp_infer.decode import generate
from ssmp_infer.engine import Engine
from ssmp_infer.model import SSMPEncoder
from ssmp_infer.scheduler import plan_buckets

from .helpers import assert_close

D = 16
MODES = ["paper", "topk"]


def tiny_model(movie_attention="prefix", shot_prior=False, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(feature_dim=D, d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0,
                      temperature=0.1, movie_attention=movie_attention, shot_prior=shot_prior)
    model = SSMPEncoder(cfg)
    with torch.no_grad():  # a random model whose attention is far from uniform, so stale states matter
        for p in model.parameters():
            p.mul_(8.0 if p.dim() >= 2 else 1.0)
    return model


def movies(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, D)).astype(np.float32) for n in sizes]


class CountingBackend(TorchBackend):
    """The real torch backend, counting movie passes and the batch size of every step."""

    def __init__(self, model):
        super().__init__(model)
        self.full_passes = 0
        self.step_batches = []
        original = model.forward_with_states

        def counted(*args, **kwargs):
            self.full_passes += 1
            return original(*args, **kwargs)

        model.forward_with_states = counted

    def step(self, state, slots, slot_masked, slot_valid):
        self.step_batches.append(slots.shape[0])
        return super().step(state, slots, slot_masked, slot_valid)


def decode(backend, feats, lengths, config):
    movie, valid = pad_batch(feats)
    return generate(backend, movie, valid, torch.tensor(lengths), config, backend.model.cfg.temperature)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shot_prior", [False, True])
def test_prefix_reuse_gives_the_trailers_of_a_full_recompute(mode, shot_prior):
    feats, lengths = movies([40, 23, 31], seed=1), [9, 5, 12]
    cached = CountingBackend(tiny_model(shot_prior=shot_prior))
    fresh = CountingBackend(tiny_model(shot_prior=shot_prior))
    got = decode(cached, feats, lengths, DecodeConfig(mode=mode, seed=3))
    want = decode(fresh, feats, lengths, DecodeConfig(mode=mode, seed=3, refresh_every=1))
    assert torch.equal(got.shots, want.shots) and torch.equal(got.rounds, want.rounds)
    assert_close(got.confidence, want.confidence, atol=1e-5, rtol=1e-4)
    assert cached.full_passes == 0  # one movie pass (prepare), then slot rows only
    assert fresh.full_passes == len(fresh.step_batches) > 1  # the old engine: a full pass every round


def test_full_attention_refresh_every_k_recomputes_every_kth_round():
    feats, lengths = movies([50], seed=2), [33]  # 33 slots: every one of 12 rounds locks some
    rounds = 12
    exact = CountingBackend(tiny_model("full"))
    want = decode(exact, feats, lengths, DecodeConfig(mode="topk", steps=rounds))
    assert exact.full_passes == rounds  # full attention's default: recompute every round (exact)
    for k in (2, 3, 5):
        backend = CountingBackend(tiny_model("full"))
        got = decode(backend, feats, lengths, DecodeConfig(mode="topk", steps=rounds, refresh_every=k))
        assert backend.full_passes == -(-rounds // k) and len(backend.step_batches) == rounds
        shots = got.shots[0].tolist()
        assert len(set(shots)) == 33 and all(0 <= s < 50 for s in shots)
    # Stale states are an approximation: on this sharp random model they change some predictions.
    never = decode(CountingBackend(tiny_model("full")), feats, lengths, DecodeConfig(mode="topk", steps=rounds, refresh_every=0))
    assert not torch.equal(never.confidence, want.confidence)


@pytest.mark.parametrize("mode", MODES)
def test_finished_movies_leave_the_batch_and_change_no_trailer(mode):
    # a 2-slot trailer is done long before a 20-slot one (topk: its last locking round comes early)
    feats, lengths = movies([30, 45, 26], seed=4), [2, 20, 3]
    backend = CountingBackend(tiny_model())
    got = decode(backend, feats, lengths, DecodeConfig(mode=mode, steps=12 if mode == "topk" else 32))
    assert backend.step_batches[0] == 3 and backend.step_batches[-1] == 1, backend.step_batches
    assert sum(backend.step_batches) < 3 * len(backend.step_batches)
    for k, (f, n) in enumerate(zip(feats, lengths)):
        alone = decode(TorchBackend(tiny_model()), [f], [n], DecodeConfig(mode=mode, steps=12 if mode == "topk" else 32))
        assert got.shots[k, :n].tolist() == alone.shots[0, :n].tolist()
        assert int(got.rounds[k]) == int(alone.rounds[0])
        assert (got.shots[k, n:] == -1).all()


@pytest.mark.parametrize("mode", MODES)
def test_padded_shots_count_in_no_softmax(mode):
    """A model without a shot prior gives padded shots a finite cosine: only the mask keeps them out of
    the softmax, so a padded movie's confidences are its own alone (a batch that skipped the mask fails)."""
    feats, lengths = movies([12, 40], seed=6), [4, 6]
    config = DecodeConfig(mode=mode, seed=2)
    got = decode(TorchBackend(tiny_model()), feats, lengths, config)
    alone = decode(TorchBackend(tiny_model()), feats[:1], lengths[:1], config)
    assert got.shots[0, :4].tolist() == alone.shots[0].tolist()
    assert_close(got.confidence[0, :4], alone.confidence[0], atol=1e-6, rtol=1e-5)


def test_movie_state_select_equals_preparing_the_subset():
    model = tiny_model(shot_prior=True)
    backend = TorchBackend(model)
    movie, valid = pad_batch(movies([20, 33, 27], seed=5))
    state = backend.prepare(movie, valid)
    rows = torch.tensor([2, 0])
    picked = state.select(rows)
    fresh = backend.prepare(movie[rows], valid[rows])
    for a, b in zip(picked.cache.keys + picked.cache.values, fresh.cache.keys + fresh.cache.values):
        assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert_close(picked.shot_prior.masked_fill(~valid[rows], 0), fresh.shot_prior.masked_fill(~valid[rows], 0), 1e-5, 1e-5)


def test_buckets_cover_every_movie_once_within_the_padding_and_token_bounds():
    rng = np.random.default_rng(0)
    shots = rng.integers(50, 3000, size=200).tolist() + [9000]
    buckets = plan_buckets(shots, max_tokens=8192, max_padding=0.2)
    assert sorted(k for b in buckets for k in b) == list(range(len(shots)))
    for b in buckets:
        longest = max(shots[k] for k in b)
        padded = longest * len(b)
        assert len(b) == 1 or padded <= 8192
        assert padded - sum(shots[k] for k in b) <= 0.2 * padded
    assert [9000] == [shots[k] for k in buckets[0]]  # too long for any budget: alone
    assert max(len(b) for b in buckets) > 1  # similar lengths do share a batch


def test_engine_buckets_give_each_movie_its_own_trailer():
    model = tiny_model()
    engine = Engine(model.cfg, TorchBackend(model))
    feats = movies([300, 35, 310, 40, 1200], seed=6)
    config = DecodeConfig(mode="paper", seed=7)
    batched = engine.generate_batch(feats, None, config)
    for trailer, f in zip(batched, feats):
        alone = engine.generate(f, None, config)
        assert trailer.shots == alone.shots and trailer.num_movie_shots == f.shape[0]


def test_cuda_graphs_are_refused_off_cuda_in_one_sentence():
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        TorchBackend(tiny_model(), "cpu", cuda_graphs=True)
    from ssmp_infer.errors import InputError

    with pytest.raises(InputError, match="need a CUDA device, and this engine runs on cpu"):
        Engine.load(device="cpu", cuda_graphs=True)
    with pytest.raises(InputError, match="torch-backend option"):
        Engine.load(device="cpu", backend="onnxruntime", cuda_graphs=True)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


class CapturingBackend(TorchBackend):
    """The CUDA-graph torch backend, counting captures and replays."""

    def __init__(self, model):
        super().__init__(model, "cuda", cuda_graphs=True)
        self.captures = 0
        self.steps = 0
        original = model.step

        def counted(*args, **kwargs):
            if torch.cuda.is_current_stream_capturing():
                self.captures += 1
            return original(*args, **kwargs)

        model.step = counted

    def step(self, state, slots, slot_masked, slot_valid):
        self.steps += 1
        return super().step(state, slots, slot_masked, slot_valid)


@needs_cuda
@pytest.mark.parametrize("mode", MODES)
def test_cuda_graph_replays_give_the_eager_trailers_and_capture_once_per_batch(mode):
    feats, lengths = movies([40, 23, 31], seed=1), [9, 2, 12]  # the 2-slot movie leaves early: a new batch
    config = DecodeConfig(mode=mode, seed=3, kernels="torch")  # step graphs; the fused kernels replay whole rounds
    eager = TorchBackend(tiny_model(shot_prior=True), "cuda")
    graphed = CapturingBackend(tiny_model(shot_prior=True))
    movie, valid = pad_batch(feats)
    run = lambda b: generate(b, movie.cuda(), valid.cuda(), torch.tensor(lengths), config, b.model.cfg.temperature)  # noqa: E731
    want, got = run(eager), run(graphed)
    assert torch.equal(got.shots, want.shots) and torch.equal(got.rounds, want.rounds)
    assert_close(got.confidence, want.confidence, atol=1e-5, rtol=1e-4)
    # one capture per batch composition (movies leave at most twice here), every other step a replay
    assert 1 <= graphed.captures <= 3 < graphed.steps


def test_states_with_slot_room_step_exactly_as_concatenation_does():
    """The buffers a step writes its slots' keys and values into give the same bits as concatenating a
    fresh copy each round, round after round, after movies leave, and for another slot count."""
    import torch.nn.functional as F

    model = tiny_model(shot_prior=True).eval()
    feats = movies([40, 23, 31], seed=8)
    movie, valid = pad_batch(feats)
    J = 9
    g = torch.Generator().manual_seed(0)
    slots = F.normalize(torch.randn(3, J, D, generator=g), dim=-1)
    slot_valid = torch.arange(J)[None] < torch.tensor([9, 5, 7])[:, None]
    with torch.inference_mode():
        plain = model.prepare(F.normalize(movie, dim=-1), valid)
        roomy = plain.with_slot_room(J)
        assert roomy.slot_room == J and roomy.keys[0].shape[2] == 40 + J
        for round_ in range(3):  # the room is rewritten every round: nothing of the last one may stay
            masked = torch.rand(3, J, generator=g) < 0.5
            assert torch.equal(model.step(roomy, slots, masked, slot_valid), model.step(plain, slots, masked, slot_valid))
        rows = torch.tensor([2, 0])
        assert torch.equal(model.step(roomy.select(rows), slots[rows], masked[rows], slot_valid[rows]),
                           model.step(plain.select(rows), slots[rows], masked[rows], slot_valid[rows]))
        fewer = slice(0, J - 2)  # another slot count than the room's: the movie's rows, concatenated
        assert torch.equal(model.step(roomy, slots[:, fewer], masked[:, fewer], slot_valid[:, fewer]),
                           model.step(plain, slots[:, fewer], masked[:, fewer], slot_valid[:, fewer]))


@needs_cuda
@pytest.mark.parametrize("mode", MODES)
def test_whole_rounds_replayed_as_cuda_graphs_give_the_eager_trailers(mode):
    """With the fused kernels the decoder captures whole rounds (decode's ReplayedRound): the trailers
    of a batch whose movies leave at different rounds equal the eager ones."""
    pytest.importorskip("triton", reason="the fused round needs triton")
    movies_, lengths = movies([40, 23, 31], seed=1), [9, 2, 12]
    config = DecodeConfig(mode=mode, seed=3, kernels="triton")
    model = tiny_model(shot_prior=True)
    eager = Engine(model.cfg, TorchBackend(model, "cuda"))
    graphed = CapturingBackend(tiny_model(shot_prior=True))
    step_graphs, replay_step = [], graphed._replay_step
    graphed._replay_step = lambda *a: step_graphs.append(1) or replay_step(*a)
    for want, got in zip(eager.generate_batch(movies_, lengths, config),
                         Engine(model.cfg, graphed).generate_batch(movies_, lengths, config)):
        assert got.shots == want.shots and got.steps == want.steps
        assert np.allclose(got.confidence, want.confidence, atol=1e-5)
    # at most one capture per batch composition (movies leave at most twice here): the round's, which holds
    # the step; no step graph of its own, but for paper mode's last round, which is never replayed
    rounds = max(t.steps for t in eager.generate_batch(movies_, lengths, config))
    assert len(step_graphs) <= (mode == "paper" and rounds == config.rounds_cap)
    assert 1 <= graphed.captures - len(step_graphs) <= 3


def test_scoring_in_the_output_basis_gives_the_trailers_of_scoring_in_d():
    """A model much narrower than its features (d + 1 <= D / 2, as the demo preset's 193 of 1024): the
    fp32 backend holds the movie in d + 1 coordinates that span every prediction, and its trailers are
    those of scoring over all D dimensions; `select` keeps each movie's own coordinates."""
    torch.manual_seed(4)
    cfg = ModelConfig(feature_dim=80, d_model=16, n_layers=2, n_heads=2, d_ff=32, dropout=0.0, temperature=0.1,
                      shot_prior=True)
    model = SSMPEncoder(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0 if p.dim() >= 2 else 1.0)
        model.out_proj.bias.normal_()  # the span must hold the bias too
    narrow, wide = TorchBackend(model), TorchBackend(model)
    wide.output_basis = None
    assert narrow.output_basis.shape == (80, 17)
    rng = np.random.default_rng(6)
    feats = [rng.standard_normal((n, 80)).astype(np.float32) for n in (60, 41, 52)]
    lengths = [14, 9, 20]
    for mode in MODES:
        got = decode(narrow, feats, lengths, DecodeConfig(mode=mode, seed=2))
        want = decode(wide, feats, lengths, DecodeConfig(mode=mode, seed=2))
        assert torch.equal(got.shots, want.shots) and torch.equal(got.rounds, want.rounds)
        assert_close(got.confidence, want.confidence, atol=1e-5, rtol=1e-5)
    movie, valid = pad_batch(feats)
    state = narrow.prepare(movie, valid)
    assert_close(state.select(torch.tensor([2, 0])).movie_coords, narrow.prepare(movie[[2, 0]], valid[[2, 0]]).movie_coords,
                 atol=1e-6, rtol=1e-6)
    assert TorchBackend(tiny_model()).output_basis is None  # d + 1 > D / 2: nothing to gain
    assert TorchBackend(model, precision="bf16").output_basis is None  # bf16 outputs leave the span
