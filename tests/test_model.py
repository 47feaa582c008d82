import pytest
import torch

from ssmp_infer.config import ModelConfig, model_preset
from ssmp_infer.context_prior import LOCAL_SHOTS, NOVELTY_SHOTS, context_features, context_width
from ssmp_infer.model import (
    NUM_POSITION_FEATURES,
    SSMPEncoder,
    num_parameters,
    position_features,
    score_logits,
    sinusoidal,
)

from .helpers import assert_close

TINY = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, feature_dim=24, dropout=0.0, movie_attention="full")


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


def test_presets_train_the_wide_context_branch_and_switching_it_off_drops_its_refinements():
    for name in ("paper", "demo"):
        cfg = model_preset(name)
        assert (cfg.context_prior, cfg.local_context, cfg.context_hidden, cfg.context_novelty, cfg.context_dropout) \
            == (True, True, 256, True, 0.2)
        for off in (dict(context_prior=False), dict(shot_prior=False)):
            cfg = model_preset(name, **off)
            assert not (cfg.context_prior or cfg.local_context or cfg.context_novelty) and cfg.context_dropout == 0
            assert SSMPEncoder(cfg).context_prior is None
        with pytest.raises(ValueError, match="context_novelty .* needs context_prior"):
            model_preset(name, context_prior=False, context_novelty=True)  # asked for both: a contradiction
        with pytest.raises(ValueError, match="context_prior .* needs shot_prior"):
            model_preset(name, shot_prior=False, context_prior=True)


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


def test_content_dominates_position_at_initialisation():
    """A shot's content, not its position, is what the first layer mostly reads (demo preset)."""
    torch.manual_seed(0)
    cfg = model_preset("demo")
    model = SSMPEncoder(cfg)
    I, J = 1909, 71
    feats = torch.nn.functional.normalize(torch.randn(1, I, cfg.feature_dim), dim=-1)
    from ssmp_infer.model import position_features

    valid = torch.ones(1, I, dtype=torch.bool)
    with torch.no_grad():
        content = model.in_proj(feats).norm(dim=-1).mean()
        movie_pos = model.movie_pos(position_features(valid)).norm(dim=-1).mean()
        slot_pos = model.slot_pos(position_features(torch.ones(1, J, dtype=torch.bool))).norm(dim=-1).mean()
    assert content > 3 * movie_pos and content > 3 * slot_pos, (content, movie_pos, slot_pos)


def test_movie_and_slot_positions_differ():
    model = tiny_model()
    from ssmp_infer.model import position_features

    valid = torch.ones(1, 6, dtype=torch.bool)
    with torch.no_grad():
        movie, slot = model.movie_pos(position_features(valid)), model.slot_pos(position_features(valid))
    assert (movie - slot).norm(dim=-1).min() > 0.1 * movie.norm(dim=-1).min()


PREFIX = ModelConfig(**{**TINY.to_dict(), "movie_attention": "prefix"})


def test_prefix_attention_movie_states_ignore_the_slots():
    """Under prefix attention the movie tokens never read the slots: a slot's input changes the slot
    outputs but not the movie's hidden states, so those can be computed once per trailer."""
    model = tiny_model(cfg=PREFIX)
    movie, mv, slots, masked, sv = random_inputs(I=10, J=4, D=PREFIX.feature_dim)
    captured = []
    hook = model.blocks[-1].register_forward_hook(lambda m, i, o: captured.append(o[0][:, :10].clone()))
    out_a = model(movie, mv, slots, masked, sv)
    out_b = model(movie, mv, torch.randn_like(slots), ~masked, sv)
    hook.remove()
    assert_close(captured[1], captured[0], atol=1e-6, rtol=0)
    assert (out_a - out_b).abs().max() > 1e-4  # the slots themselves do read their inputs

    full = tiny_model(cfg=TINY)
    captured.clear()
    hook = full.blocks[-1].register_forward_hook(lambda m, i, o: captured.append(o[0][:, :10].clone()))
    full(movie, mv, slots, masked, sv)
    full(movie, mv, torch.randn_like(slots), ~masked, sv)
    hook.remove()
    assert (captured[1] - captured[0]).abs().max() > 1e-4  # full attention: they do depend on the slots


def test_prefix_attention_keeps_padding_invariance():
    model = tiny_model(cfg=PREFIX)
    D = PREFIX.feature_dim
    a = random_inputs(I=9, J=3, D=D, seed=1)
    b = random_inputs(I=17, J=6, D=D, seed=2)
    alone = [model(*x)[0] for x in (a, b)]
    I, J, poison = 17, 6, 1e4
    batched = model(
        torch.cat([pad_to(a[0], I, poison), b[0]]),
        torch.cat([pad_to(a[1], I, False), b[1]]),
        torch.cat([pad_to(a[2], J, -poison), b[2]]),
        torch.cat([pad_to(a[3], J, False), b[3]]),
        torch.cat([pad_to(a[4], J, False), b[4]]),
    )
    assert_close(batched[0, :3], alone[0], atol=1e-5, rtol=1e-4)
    assert_close(batched[1], alone[1], atol=1e-5, rtol=1e-4)


def test_prefix_prepare_then_step_equals_the_full_pass():
    """The exact cache: movie keys/values from one pass over the movie, then only the slot rows."""
    model = tiny_model(cfg=PREFIX)
    D = PREFIX.feature_dim
    a, b = random_inputs(I=9, J=3, D=D, seed=1), random_inputs(I=17, J=6, D=D, seed=2)
    I, J = 17, 6
    movie = torch.cat([pad_to(a[0], I, 1e4), b[0]])
    movie_valid = torch.cat([pad_to(a[1], I, False), b[1]])
    slots = torch.cat([pad_to(a[2], J, -1e4), b[2]])
    slot_masked = torch.cat([pad_to(a[3], J, False), b[3]])
    slot_valid = torch.cat([pad_to(a[4], J, False), b[4]])
    full = model(movie, movie_valid, slots, slot_masked, slot_valid)
    states = model.prepare(movie, movie_valid)
    stepped = model.step(states, slots, slot_masked, slot_valid)
    assert_close(stepped[0, :3], full[0, :3], atol=1e-5, rtol=1e-4)
    assert_close(stepped[1], full[1], atol=1e-5, rtol=1e-4)
    # several slot sets over one movie pass
    twice = model.step(states.repeat_interleave(2), slots.repeat_interleave(2, 0), slot_masked.repeat_interleave(2, 0),
                       slot_valid.repeat_interleave(2, 0))
    assert_close(twice[3], full[1], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="prefix"):
        tiny_model().prepare(movie, movie_valid)


@pytest.mark.parametrize("context", [False, True])
def test_shot_prior_starts_neutral_and_is_shared_by_every_pass(context):
    """b_i starts at zero (P is the paper's cos/tau), is -inf on padding, does not change when padding
    is added, and prepare/forward agree on it; with and without the context branch."""
    cfg = ModelConfig(**{**PREFIX.to_dict(), "shot_prior": True, "context_prior": context})
    model = tiny_model(cfg=cfg)
    short, short_valid, slots, masked, slot_valid = random_inputs(I=12, J=4, D=cfg.feature_dim, seed=3)
    movie, movie_valid = pad_to(short, 15, 1e4), pad_to(short_valid, 15, False)
    pred, states = model.forward_with_states(movie, movie_valid, slots, masked, slot_valid)
    assert (states.shot_prior[0, :12] == 0).all() and torch.isinf(states.shot_prior[0, 12:]).all()
    with torch.no_grad():
        model.shot_head.weight.normal_()  # a trained-looking head
        if context:
            for p in model.context_prior.parameters():
                p.normal_()
    pred, states = model.forward_with_states(movie, movie_valid, slots, masked, slot_valid)
    prepared = model.prepare(movie, movie_valid)
    assert_close(prepared.shot_prior[0, :12], states.shot_prior[0, :12], atol=1e-5, rtol=1e-5)
    assert_close(model.prepare(short, short_valid).shot_prior[0], prepared.shot_prior[0, :12], atol=1e-5, rtol=1e-5)
    assert states.shot_prior[0, :12].std() > 0.1
    with_prior = score_logits(pred, movie, movie_valid, cfg.temperature, states.shot_prior)
    without = score_logits(pred, movie, movie_valid, cfg.temperature)
    assert_close((with_prior - without)[0, :, :12], states.shot_prior[0, None, :12].expand(4, -1), atol=1e-4, rtol=1e-5)


def test_context_features_by_hand():
    """Each real shot: its unit feature, minus the mean of the real shots, its cosines with the shots
    before and after (1 at either end of the real shots), its position features; padding ignored."""
    g = torch.Generator().manual_seed(0)
    lengths, I, D = [5, 3], 5, 4
    unit = torch.nn.functional.normalize(torch.randn(2, I, D, generator=g), dim=-1)
    valid = torch.arange(I)[None] < torch.tensor(lengths)[:, None]
    unit = unit.masked_fill(~valid[..., None], 7.0)  # padding rows that must not count
    positions = torch.randn(2, I, 3, generator=g)
    got = context_features(unit, valid, positions)
    local = context_features(unit, valid, positions, local=True)
    for b, n in enumerate(lengths):
        mean = unit[b, :n].mean(dim=0)
        for i in range(n):
            u = unit[b, i]
            before = float(u @ unit[b, i - 1]) if i > 0 else 1.0
            after = float(u @ unit[b, i + 1]) if i < n - 1 else 1.0
            expected = torch.cat([u, u - mean, torch.tensor([before, after]), positions[b, i]])
            assert_close(got[b, i], expected, atol=1e-6, rtol=1e-6)
            near = unit[b, max(0, i - LOCAL_SHOTS): min(n, i + LOCAL_SHOTS + 1)].mean(dim=0)
            jump = u - unit[b, i - 1] if i > 0 else torch.zeros_like(u)
            expected = torch.cat([u, u - mean, u - near, jump, torch.tensor([before, after]), positions[b, i]])
            assert_close(local[b, i], expected, atol=1e-6, rtol=1e-6)


def test_novelty_by_hand():
    """With context_novelty, one more feature after the two cosines: one minus the shot's highest cosine with
    the NOVELTY_SHOTS real shots before it (0 for the first shot); padding changes no real shot's."""
    g = torch.Generator().manual_seed(2)
    lengths, I, D = [9, 4], 9, 4
    unit = torch.nn.functional.normalize(torch.randn(2, I, D, generator=g), dim=-1)
    unit[0, 7] = unit[0, 3]  # a repeat of a shot four before: nothing new
    valid = torch.arange(I)[None] < torch.tensor(lengths)[:, None]
    unit = unit.masked_fill(~valid[..., None], 7.0)
    positions = torch.randn(2, I, 3, generator=g)
    plain = context_features(unit, valid, positions, local=True)
    got = context_features(unit, valid, positions, local=True, novelty=True)
    column = 4 * D + 2
    assert got.shape[-1] == plain.shape[-1] + 1
    assert torch.equal(got[..., :column], plain[..., :column]) and torch.equal(got[..., column + 1:], plain[..., column:])
    for b, n in enumerate(lengths):
        for i in range(n):
            before = unit[b, max(0, i - NOVELTY_SHOTS): i]
            expected = 0.0 if i == 0 else 1 - float((before @ unit[b, i]).max())
            assert abs(float(got[b, i, column]) - expected) < 1e-6, (b, i)
    assert abs(float(got[0, 7, column])) < 1e-6
    assert float(got[0, 8, column]) > 0


def test_similarity_profile_by_hand():
    """With context_profile K, 2(K - 1) more features after novelty: the shot's cosine with the shots 2..K
    before it, then 2..K after it, 0 where the real movie has no such shot; a padded movie's real shots get
    what the same movie alone gets, and the features before the profile are unchanged."""
    g = torch.Generator().manual_seed(3)
    lengths, I, D, reach = [9, 5], 9, 4, 3
    unit = torch.nn.functional.normalize(torch.randn(2, I, D, generator=g), dim=-1)
    valid = torch.arange(I)[None] < torch.tensor(lengths)[:, None]
    unit = unit.masked_fill(~valid[..., None], 7.0)
    positions = torch.randn(2, I, 3, generator=g)
    plain = context_features(unit, valid, positions, local=True, novelty=True)
    got = context_features(unit, valid, positions, local=True, novelty=True, profile=reach)
    column = 4 * D + 3
    assert got.shape[-1] == plain.shape[-1] + 2 * (reach - 1) == context_width(D, 3, True, True, reach)
    assert torch.equal(got[..., :column], plain[..., :column])
    assert torch.equal(got[..., column + 2 * (reach - 1):], plain[..., column:])
    offsets = [-2, -3, 2, 3]
    for b, n in enumerate(lengths):
        for i in range(n):
            for c, offset in enumerate(offsets):
                j = i + offset
                expected = float(unit[b, i] @ unit[b, j]) if 0 <= j < n else 0.0
                assert abs(float(got[b, i, column + c]) - expected) < 1e-6, (b, i, offset)
    alone = context_features(unit[1:, :5], valid[1:, :5], positions[1:, :5], local=True, novelty=True, profile=reach)
    assert_close(got[1, :5], alone[0], atol=1e-6, rtol=0)


def test_a_wider_context_branch_with_novelty_and_dropout_keeps_its_checkpoint_names():
    """The options change the branch's sizes, never its weights' names: a checkpoint of the old branch
    loads into the new code (its config has none of the new fields), and dropout acts only in training."""
    base = {**PREFIX.to_dict(), "shot_prior": True, "context_prior": True}
    wider = {**base, "context_hidden": 32, "context_novelty": True, "context_dropout": 0.5}
    old, new = SSMPEncoder(ModelConfig(**base)), SSMPEncoder(ModelConfig(**wider))
    assert old.state_dict().keys() == new.state_dict().keys()
    assert new.context_prior.mlp[0].weight.shape == (32, old.context_prior.mlp[0].weight.shape[1] + 1)
    assert ModelConfig.from_dict({k: v for k, v in base.items() if not k.startswith("context_")} | {"context_prior": True}
                                 ).context_hidden == 64
    torch.nn.init.normal_(new.context_prior.mlp[2].weight)
    movie = torch.nn.functional.normalize(torch.randn(1, 12, PREFIX.feature_dim), dim=-1)
    valid, positions = torch.ones(1, 12, dtype=torch.bool), torch.zeros(1, 12, NUM_POSITION_FEATURES)
    new.eval()
    assert torch.equal(new.context_prior(movie, valid, positions), new.context_prior(movie, valid, positions))
    new.train()
    assert not torch.equal(new.context_prior(movie, valid, positions), new.context_prior(movie, valid, positions))
    with pytest.raises(ValueError, match="context_novelty .* needs context_prior"):
        ModelConfig(**{**wider, "context_prior": False, "context_dropout": 0.0})
    with pytest.raises(ValueError, match="context_dropout must be in"):
        ModelConfig(**{**base, "context_dropout": 1.0})
    # the similarity profile widens the first layer by 2(K - 1) inputs, needs the branch, and is 0 or 2..16
    profiled = SSMPEncoder(ModelConfig(**{**wider, "context_profile": 4}))
    assert profiled.state_dict().keys() == old.state_dict().keys()
    assert profiled.context_prior.mlp[0].weight.shape[1] == new.context_prior.mlp[0].weight.shape[1] + 6
    assert ModelConfig.from_dict(base).context_profile == 0
    for bad in (1, 17, -2):
        with pytest.raises(ValueError, match="context_profile must be 0"):
            ModelConfig(**{**base, "context_profile": bad})
    with pytest.raises(ValueError, match="context_profile .* needs context_prior"):
        ModelConfig(**{**base, "context_prior": False, "context_profile": 4})
    assert model_preset("demo", context_prior=False).context_profile == 0


def test_the_local_mean_is_local():
    """A movie longer than the local window: each shot's local mean is over the 9 shots around it (fewer
    at the ends), so a shot far away does not move it."""
    g = torch.Generator().manual_seed(1)
    I, D = 30, 4
    unit = torch.nn.functional.normalize(torch.randn(1, I, D, generator=g), dim=-1)
    valid = torch.ones(1, I, dtype=torch.bool)
    positions = torch.zeros(1, I, 0)
    got = context_features(unit, valid, positions, local=True)[0, :, 2 * D: 3 * D]
    moved = unit.clone()
    moved[0, 29] = -moved[0, 29]  # more than LOCAL_SHOTS from shot 20
    again = context_features(moved, valid, positions, local=True)[0, :, 2 * D: 3 * D]
    assert_close(got[:25], again[:25], atol=1e-6, rtol=0)
    assert not torch.allclose(got[25:], again[25:])


def test_checkpoint_configs_without_the_shot_prior_keep_the_papers_scoring():
    branch = ("context_hidden", "context_novelty", "context_dropout")  # fields newer than the local read
    old = {k: v for k, v in model_preset("demo").to_dict().items()
           if k not in ("shot_prior", "context_prior", "local_context", *branch)}
    assert ModelConfig.from_dict(old).shot_prior is False and ModelConfig.from_dict(old).context_prior is False
    # a checkpoint from before the local read keeps its narrower context branch (and loads its weights)
    before_local = {k: v for k, v in model_preset("demo").to_dict().items() if k not in ("local_context", *branch)}
    assert ModelConfig.from_dict(before_local).context_prior and not ModelConfig.from_dict(before_local).local_context
    assert model_preset("demo").local_context and model_preset("paper").local_context
    with pytest.raises(ValueError, match="local_context .* needs context_prior"):
        ModelConfig.from_dict({**before_local, "context_prior": False, "local_context": True})
    assert model_preset("demo").shot_prior and model_preset("paper").shot_prior
    with pytest.raises(ValueError, match="context_prior .* needs shot_prior"):
        ModelConfig.from_dict({**old, "context_prior": True})
    with pytest.raises(ValueError, match="shot_prior must be true or false"):
        ModelConfig.from_dict({**old, "shot_prior": 1})


def test_position_keys_start_as_the_unit_movie_and_carry_where_a_shot_lies():
    """k_i = normalize(m_i + W_k·pos_i): the unit movie while W_k is zero (a new model scores as the
    paper), then unit rows that tell apart two shots of the same content at different places, equal to
    the formula by hand and unchanged by padding (padded rows are left as they were)."""
    cfg = ModelConfig(**{**PREFIX.to_dict(), "position_keys": True})
    model = tiny_model(cfg=cfg)
    short, short_valid, _, _, _ = random_inputs(I=12, J=4, D=cfg.feature_dim, seed=5)
    short[0, 11] = short[0, 0]  # the same content first and last
    unit = torch.nn.functional.normalize(short, dim=-1)
    assert_close(model.shot_keys(unit, short_valid), unit, atol=1e-7, rtol=1e-6)  # renormalised: rounding only
    with torch.no_grad():
        model.key_position.weight.normal_()  # a trained-looking map
    keys = model.shot_keys(unit, short_valid)
    by_hand = torch.nn.functional.normalize(unit + position_features(short_valid) @ model.key_position.weight.T, dim=-1)
    assert_close(keys, by_hand, atol=1e-6, rtol=1e-6)
    assert_close(keys.norm(dim=-1), torch.ones(1, 12), atol=1e-6, rtol=1e-6)
    assert float(keys[0, 0] @ keys[0, 11]) < 0.9  # same content, different place: different keys
    padded_unit = pad_to(unit, 15, 7.0)
    padded = model.shot_keys(padded_unit, pad_to(short_valid, 15, False))
    assert_close(padded[:, :12], keys, atol=1e-6, rtol=1e-6)
    assert (padded[:, 12:] == 7.0).all()
    without = tiny_model(cfg=PREFIX)
    assert without.key_position is None and without.shot_keys(unit, short_valid) is unit
    old = {k: v for k, v in cfg.to_dict().items() if k != "position_keys"}
    assert ModelConfig.from_dict(old).position_keys is False  # checkpoints from before score as they did
    assert model_preset("demo").position_keys and model_preset("paper").position_keys
