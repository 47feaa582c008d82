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


def with_position_keys(engine, on: bool = True, scale: float = 0.05, seed: int = 0):
    """`engine`'s model with position keys on or off, so that a test exercises both whatever the
    bundled model has: keys added with their map drawn at random (it starts at zero when trained, so
    a fresh map would not move a single score), or the model's own keys dropped (the paper's scoring)."""
    from ssmp_infer.backends import TorchBackend
    from ssmp_infer.config import ModelConfig
    from ssmp_infer.engine import Engine
    from ssmp_infer.model import SSMPEncoder

    base = engine.backend.model
    if base.cfg.position_keys == on:
        return engine
    cfg = ModelConfig(**{**base.cfg.to_dict(), "position_keys": on})
    model = SSMPEncoder(cfg)
    weights = {k: v for k, v in base.state_dict().items() if on or k != "key_position.weight"}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert missing == (["key_position.weight"] if on else []) and not unexpected
    if on:
        with torch.no_grad():
            model.key_position.weight.normal_(0.0, scale, generator=torch.Generator().manual_seed(seed))
    source = "bundled+position keys" if on else "bundled without position keys"
    return Engine(cfg, TorchBackend(model.eval(), engine.backend.device), source=source)
