import pytest
import torch

from ssmp_infer.config import ModelConfig, model_preset
from ssmp_infer.model import SSMPEncoder, num_parameters, score_logits, sinusoidal

from .helpers import assert_close

TINY = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, feature_dim=24, dropout=0.0)


def tiny_model(seed=0, cfg=TINY):
    torch.manual_seed(seed)
    return SSMPEncoder(cfg).eval()


def random_inputs(I, J, D, masked_fraction=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    movie = torch.randn(1, I, D, generator=g)
    slots = torch.randn(1, J, D, generator=g)
    masked = torch.rand(1, J, generator=g) < masked_fraction
    return movie, torch.ones(1, I, dtype=torch.bool), slots, masked, torch.ones(1, J, dtype=torch.bool)


def pad_to(x, n, fill):
    """Pad dim 1 of x to n with `fill` (a poison: huge finite values, or True/False for masks)."""
    extra = n - x.shape[1]
    if x.dtype == torch.bool:
        return torch.cat([x, torch.full((x.shape[0], extra), fill, dtype=torch.bool)], dim=1)
    return torch.cat([x, torch.full((x.shape[0], extra, *x.shape[2:]), fill)], dim=1)


def test_padded_rows_never_change_real_outputs():
    model = tiny_model()
    D = TINY.feature_dim
    a = random_inputs(I=9, J=3, D=D, seed=1)
    b = random_inputs(I=17, J=6, D=D, seed=2)
    alone = [model(*x)[0] for x in (a, b)]

    I, J = 17, 6
    poison = 1e4  # finite garbage: a leak through attention would move the real rows a lot
    movie = torch.cat([pad_to(a[0], I, poison), b[0]])
    slots = torch.cat([pad_to(a[2], J, -poison), b[2]])
    movie_valid = torch.cat([pad_to(a[1], I, False), b[1]])
    slot_masked = torch.cat([pad_to(a[3], J, False), b[3]])
    slot_valid = torch.cat([pad_to(a[4], J, False), b[4]])
    batched = model(movie, movie_valid, slots, slot_masked, slot_valid)

    assert_close(batched[0, :3], alone[0], atol=1e-5, rtol=1e-4)
    assert_close(batched[1], alone[1], atol=1e-5, rtol=1e-4)


def test_masked_slot_reads_the_placeholder_not_its_input():
    model = tiny_model()
    movie, mv, slots, _, sv = random_inputs(I=11, J=4, D=TINY.feature_dim)
    masked = torch.tensor([[True, False, True, False]])
    out = model(movie, mv, slots, masked, sv)

    changed = slots.clone()
    changed[0, 0] = torch.randn(TINY.feature_dim)  # a masked slot: invisible to the model
    assert_close(model(movie, mv, changed, masked, sv), out, atol=1e-6, rtol=0)

    changed = slots.clone()
    changed[0, 1] = torch.randn(TINY.feature_dim)  # an unmasked slot: every output sees it
    assert (model(movie, mv, changed, masked, sv) - out).abs().max() > 1e-4


def test_feature_scale_does_not_matter():
    """Cosine is scale-free and the encoder reads unit vectors: scaling a shot changes nothing."""
    model = tiny_model()
    movie, mv, slots, masked, sv = random_inputs(I=8, J=3, D=TINY.feature_dim)
    scale = torch.rand(1, 8, 1) * 100 + 0.01
    assert_close(model(movie * scale, mv, slots, masked, sv), model(movie, mv, slots, masked, sv), atol=1e-5, rtol=1e-4)


def test_positions_work_for_long_movies():
    table = sinusoidal(torch.arange(8192), 64)
    # distinct rows for every position up to 8192 (no wrap-around)
    dist = torch.cdist(table[::7], table[::7])
    assert dist.fill_diagonal_(float("inf")).min() > 1e-3

    model = tiny_model(cfg=ModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, feature_dim=8, dropout=0.0))
    movie, mv, slots, masked, sv = random_inputs(I=8192, J=3, D=8)
    with torch.no_grad():
        out = model(movie, mv, slots, masked, sv)
    assert out.shape == (1, 3, 8) and torch.isfinite(out).all()


def test_score_logits_gives_padded_shots_no_probability():
    pred = torch.randn(2, 3, 5)
    movie = torch.randn(2, 4, 5)
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    probs = score_logits(pred, movie, valid, temperature=0.1).softmax(-1)
    assert (probs[0, :, 3] == 0).all()
    assert_close(probs.sum(-1), torch.ones(2, 3), atol=1e-6, rtol=0)
    cos = torch.nn.functional.cosine_similarity(pred[1, 2], movie[1, 1], dim=0)
    assert_close(score_logits(pred, movie, valid, 0.1)[1, 2, 1], cos / 0.1, atol=1e-5, rtol=1e-5)


def test_presets():
    paper = model_preset("paper")
    assert (paper.n_layers, paper.n_heads, paper.d_model, paper.d_ff, paper.feature_dim) == (4, 4, 1024, 2048, 1024)
    assert 30e6 < num_parameters(SSMPEncoder(paper)) < 40e6  # the paper's ~34M
    demo = model_preset("demo")
    assert demo.feature_dim == 1024 and num_parameters(SSMPEncoder(demo)) < 3e6


def test_bad_model_config_is_one_clear_error():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown preset"):
        model_preset("huge")
