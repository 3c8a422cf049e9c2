"""Shared float64 reference checks for the quantizer tests."""

import torch


def assert_argmin(ids, dist, max_mismatches=2, rtol=1e-5):
    """ids equal the float64 argmin, except on near-ties whose two distances agree within rtol."""
    ref = dist.argmin(dim=1)
    assert ids.shape == ref.shape and ids.dtype == torch.long
    bad = (ids != ref).nonzero().squeeze(1)
    if bad.numel():
        got, best = dist[bad, ids[bad]], dist[bad, ref[bad]]
        scale = torch.maximum(got.abs(), best.abs()).clamp_min(1e-30)
        assert torch.all((got - best).abs() <= rtol * scale), f"non-tie mismatches at rows {bad.tolist()}"
    assert bad.numel() <= max_mismatches, f"{bad.numel()} near-tie mismatches is too many"
