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
