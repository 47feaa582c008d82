import torch


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> None:
    """Like torch.testing.assert_close, but says how many elements differ, where, and by how much."""
    actual, expected = torch.as_tensor(actual).float(), torch.as_tensor(expected).float()
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    nonfinite = ~torch.isfinite(actual) & torch.isfinite(expected)
    diff = (actual - expected).abs()
    bad = (diff > atol + rtol * expected.abs()) | nonfinite | torch.isnan(diff)
    if bad.any():
        where = bad.nonzero()[:5].tolist()
        worst = diff.masked_fill(torch.isnan(diff), float("inf")).max()
        raise AssertionError(
            f"{int(bad.sum())}/{bad.numel()} elements differ (atol {atol}, rtol {rtol}); "
            f"max |diff| {float(worst):.3g}; {int(nonfinite.sum())} NaN/Inf; first at {where}"
        )


def with_position_keys(engine, scale: float = 0.05, seed: int = 0):
    """`engine`'s model with position keys added, their map drawn at random (it starts at zero when
    trained): the bundled model scores against the bare movie, so this is what exercises the keys
    through a real model's decoding."""
    from ssmp_infer.backends import TorchBackend
    from ssmp_infer.config import ModelConfig
    from ssmp_infer.engine import Engine
    from ssmp_infer.model import SSMPEncoder

    base = engine.backend.model
    cfg = ModelConfig(**{**base.cfg.to_dict(), "position_keys": True})
    model = SSMPEncoder(cfg)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert missing == ["key_position.weight"] and not unexpected
    with torch.no_grad():
        model.key_position.weight.normal_(0.0, scale, generator=torch.Generator().manual_seed(seed))
    return Engine(cfg, TorchBackend(model.eval(), engine.backend.device), source="bundled+position keys")
