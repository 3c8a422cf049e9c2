"""Stage-1 distillation loss: cosine against hand values, L1, commitment, target detached."""

import pytest
import torch

from semhitok.losses import SemanticDistillationLoss, SemanticLossConfig
from semhitok.modeling.outputs import SemanticForwardOutput
from semhitok.quantizers import QuantizerOutput


def _out(reconstruction, features, commitment=0.0):
    B, L = features.shape[:2]
    z = torch.zeros(B, L, 4)
    loss = torch.tensor(float(commitment))
    q = QuantizerOutput(
        quantized=z,
        ids=torch.zeros(B, L, dtype=torch.long),
        loss=loss,
        commitment_loss=loss,
        codebook_loss=torch.tensor(0.0),
        perplexity=torch.tensor(1.0),
        usage=torch.tensor(1.0),
    )
    return SemanticForwardOutput(features=features, quantizer=q, reconstruction=reconstruction)


def test_cosine_zero_for_identical_and_two_for_opposite():
    f = torch.randn(2, 5, 8)
    loss = SemanticDistillationLoss()
    assert loss(_out(f.clone(), f))["cosine"].item() == pytest.approx(0.0, abs=1e-6)
    assert loss(_out(-3.0 * f, f))["cosine"].item() == pytest.approx(2.0, abs=1e-6)
    # Scale-invariant: a positive multiple is still distance 0.
    assert loss(_out(7.0 * f, f))["cosine"].item() == pytest.approx(0.0, abs=1e-6)


def test_matches_hand_computation_and_total():
    """Per token 1 - <a,b>/(|a||b|), averaged over B*L tokens; total = weighted sum of the terms."""
    # Token 1: orthogonal (1), token 2: 45 degrees (1 - 1/sqrt2), token 3: identical (0).
    pred = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [2.0, 3.0]]])
    target = torch.tensor([[[0.0, 2.0], [1.0, 0.0], [2.0, 3.0]]])
    expected_cos = (1.0 + (1.0 - 2**-0.5) + 0.0) / 3
    expected_l1 = (1 + 2 + 0 + 1 + 0 + 0) / 6
    loss = SemanticDistillationLoss(SemanticLossConfig(cosine_weight=2.0, l1_weight=0.5))
    out = loss(_out(pred, target, commitment=0.3))
    assert set(out) == {"loss", "cosine", "l1", "commitment"}
    assert out["cosine"].item() == pytest.approx(expected_cos, rel=1e-6)
    assert out["l1"].item() == pytest.approx(expected_l1, rel=1e-6)
    assert out["commitment"].item() == pytest.approx(0.3)
    assert out["loss"].item() == pytest.approx(2.0 * expected_cos + 0.5 * expected_l1 + 0.3, rel=1e-6)


def test_gradient_reaches_prediction_not_target():
    target = torch.randn(2, 3, 6, requires_grad=True)
    pred = torch.randn(2, 3, 6, requires_grad=True)
    out = SemanticDistillationLoss(SemanticLossConfig(l1_weight=1.0))(_out(pred, target))
    out["loss"].backward()
    assert target.grad is None
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_rejects_bad_weights_and_shapes():
    with pytest.raises(ValueError, match=r"^cosine_weight: must be >= 0, got -1.0$"):
        SemanticLossConfig(cosine_weight=-1.0)
    with pytest.raises(ValueError, match=r"^l1_weight: expected a number, got 'x' \(str\)$"):
        SemanticLossConfig(l1_weight="x")
    with pytest.raises(TypeError, match="needs a SemanticLossConfig"):
        SemanticDistillationLoss({"cosine_weight": 1.0})
    with pytest.raises(ValueError, match="same shape"):
        SemanticDistillationLoss()(_out(torch.randn(1, 2, 3), torch.randn(1, 2, 4)))
