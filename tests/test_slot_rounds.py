"""The torch backend's rounds on a kept movie (ssmp_infer/backends/slot_rounds.py) compute `SSMPEncoder.step`
mapped into the output span for the masked slots, up to float rounding: padded batches and single movies
(no attention mask), masked and locked slots, a cache whose slot rows held garbage; and a decoder that
runs them gives the trailers of one that runs `step`."""

import dataclasses

import numpy as np
import pytest
import torch

from ssmp_infer.backends import TorchBackend
from ssmp_infer.backends.slot_rounds import slot_room_for
from ssmp_infer.config import DecodeConfig, ModelConfig
from ssmp_infer.data import pad_batch, slot_inputs
from ssmp_infer.decode import generate
from ssmp_infer.model import SSMPEncoder

from .helpers import assert_close

D = 80  # wide enough beside d 16 that the model has an output basis (d + 1 <= D / 2)


def narrow_model(seed: int, position_keys: bool = False) -> SSMPEncoder:
    torch.manual_seed(seed)
    cfg = ModelConfig(feature_dim=D, d_model=16, n_layers=3, n_heads=2, d_ff=32, dropout=0.0, temperature=0.1,
                      shot_prior=True, position_keys=position_keys)
    model = SSMPEncoder(cfg)
    with torch.no_grad():  # far from the initialisation's near-uniform attention and zero biases
        for p in model.parameters():
            p.mul_(8.0) if p.dim() >= 2 else p.normal_()
    return model


def in_slot_order(packed, J: int) -> torch.Tensor:
    """`step_coords`' packed predictions (row w of a movie is slot pick[b, w]) back in slot order, (B, J, r);
    slots without a row are NaN."""
    pred, pick = packed
    if pick is None:
        return pred
    out = torch.full((pred.shape[0], J, pred.shape[2]), float("nan"))
    return out.scatter_(1, pick[..., None].expand_as(pred), pred)


def movies(sizes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, D)).astype(np.float32) for n in sizes]


# the last case has more slots than the room a movie's states are prepared with (`slot_room_for`)
@pytest.mark.parametrize("sizes,lengths", [((37,), (9,)), ((60, 23, 41), (12, 5, 7)), ((1,), (1,)), ((120,), (80,))])
def test_slot_rounds_equal_the_step_in_output_coordinates(sizes, lengths):
    backend = TorchBackend(narrow_model(1, position_keys=len(sizes) > 1))
    movie, valid = pad_batch(movies(sizes, 2))
    B, J, I = len(sizes), max(lengths), movie.shape[1]
    slot_valid = torch.arange(J)[None, :] < torch.tensor(lengths)[:, None]
    gen = torch.Generator().manual_seed(3)
    for round_ in range(3):
        state, reference = backend.prepare(movie, valid), backend.prepare(movie, valid)
        shots = torch.randint(0, I, (B, J), generator=gen) % valid.sum(dim=1, keepdim=True)
        masked = torch.rand(B, J, generator=gen) < 0.5
        slots = slot_inputs(reference.scoring_keys, shots)
        want = backend.step(reference, slots, masked, slot_valid).float() @ reference.output_basis  # (B, J, r)
        with torch.inference_mode():  # the room for the slots' rows: stale garbage
            for keys, values in zip(state.cache.keys, state.cache.values):
                keys[:, :, I:] = float("nan")
                values[:, :, I:] = float("nan")
        packed = backend.step_coords(state, shots, masked, slot_valid)
        got = in_slot_order(packed, J)
        assert got.shape == want.shape and state.steps_since_prepare == 1
        read = masked & slot_valid  # the rows a decoder reads; a locked slot's prediction is never used
        assert_close(got[read], want[read], atol=2e-4, rtol=2e-4)
        if packed[1] is not None:  # the masked slots first, in slot order, as many rows as the most of a movie
            assert packed[1].shape[1] == int(read.sum(dim=1).max())
            for b in range(B):
                assert packed[1][b, : int(read[b].sum())].tolist() == read[b].nonzero().squeeze(1).tolist()
        assert (state.cache.slot_room > J) == (J < slot_room_for(I))  # the prepared room, or a decode's own


def test_the_positions_follow_the_slots_of_each_decode():
    """The slots' position rows are kept per pattern of real slots; another pattern gets its own."""
    backend = TorchBackend(narrow_model(4))
    movie, valid = pad_batch(movies((30,), 5))
    state = backend.prepare(movie, valid)
    for J in (6, 6, 9):
        slot_valid, masked = torch.ones(1, J, dtype=torch.bool), torch.ones(1, J, dtype=torch.bool)
        shots = torch.zeros(1, J, dtype=torch.int64)
        got = in_slot_order(backend.step_coords(state, shots, masked, slot_valid), J)
        slots = slot_inputs(state.scoring_keys, shots)
        fresh = backend.prepare(movie, valid)
        assert_close(got, backend.step(fresh, slots, masked, slot_valid) @ fresh.output_basis, atol=2e-4, rtol=2e-4)


def test_a_decoder_on_slot_rounds_gives_the_trailers_of_one_on_step():
    model = narrow_model(6, position_keys=True)
    fast, plain = TorchBackend(model), TorchBackend(model)
    plain.slot_rounds = None  # every round through `step`, scored through the basis
    feats, lengths = movies((70, 44, 58), 7), torch.tensor([15, 6, 11])
    movie, valid = pad_batch(feats)
    for config in (DecodeConfig(mode="topk"), DecodeConfig(mode="paper", seed=3), DecodeConfig(mode="greedy")):
        got = generate(fast, movie, valid, lengths, config, model.cfg.temperature)
        want = generate(plain, movie, valid, lengths, config, model.cfg.temperature)
        assert torch.equal(got.shots, want.shots) and torch.equal(got.rounds, want.rounds), config.mode
        assert_close(got.confidence, want.confidence, atol=1e-5, rtol=1e-4)
    # one movie, no padding: attention without a mask
    for k, feat in enumerate(feats):
        one, one_valid = pad_batch([feat])
        got = generate(fast, one, one_valid, lengths[k:k + 1], DecodeConfig(mode="topk"), model.cfg.temperature)
        want = generate(plain, one, one_valid, lengths[k:k + 1], DecodeConfig(mode="topk"), model.cfg.temperature)
        assert torch.equal(got.shots, want.shots)


def test_slot_rounds_run_only_where_they_are_exact_and_measured():
    model = narrow_model(8)
    movie, valid = pad_batch(movies((20,), 9))
    shots, masked, slot_valid = torch.zeros(1, 4, dtype=torch.int64), torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)
    backend = TorchBackend(model)
    assert backend.step_coords(backend.prepare(movie, valid, refresh_every=1), shots, masked, slot_valid) is None
    assert TorchBackend(model, precision="bf16").slot_rounds is None  # bf16 outputs leave the span
    full = SSMPEncoder(dataclasses.replace(model.cfg, movie_attention="full"))
    full_backend = TorchBackend(full)
    assert full_backend.step_coords(full_backend.prepare(movie, valid), shots, masked, slot_valid) is None
