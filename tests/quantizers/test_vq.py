"""VectorQuantizer (vanilla and normalized VQ trained by gradient) against brute-force references."""

import pytest
import torch
import torch.nn.functional as F

from semhitok.quantizers import VectorQuantizer

from _reference import assert_argmin


@pytest.mark.parametrize("normalize", [False, True])
def test_ids_losses_and_output_match_the_formulas(normalize):
    torch.manual_seed(0)
    q = VectorQuantizer(50, 6, normalize=normalize, commitment_weight=0.25, codebook_weight=1.0)
    z = torch.randn(4, 30, 6) * 2
    out = q(z)
    zz = F.normalize(z.reshape(-1, 6), dim=-1) if normalize else z.reshape(-1, 6)
    cc = F.normalize(q.weight.detach(), dim=-1) if normalize else q.weight.detach()
    dist = ((zz.double()[:, None] - cc.double()[None]) ** 2).sum(-1)
    assert_argmin(out.ids.reshape(-1), dist)
    codes = cc[out.ids.reshape(-1)]
    assert torch.allclose(out.quantized.reshape(-1, 6), codes, atol=1e-6)
    mse = ((zz - codes) ** 2).mean()
    assert float(out.codebook_loss.detach()) == pytest.approx(float(mse), rel=1e-5)
    assert float(out.commitment_loss.detach()) == pytest.approx(float(mse), rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(1.25 * float(mse), rel=1e-5)
    if normalize:
        assert torch.allclose(out.quantized.norm(dim=-1), torch.ones(4, 30), atol=1e-5)
        assert torch.allclose(q.lookup(out.ids), out.quantized, atol=1e-6)


def test_gradients_flow_straight_through_and_into_the_codebook():
    torch.manual_seed(0)
    q = VectorQuantizer(8, 4)
    z = torch.randn(16, 4, requires_grad=True)
    out = q(z)
    (out.quantized * torch.arange(4.0)).sum().backward()
    assert torch.equal(z.grad, torch.arange(4.0).expand(16, 4))  # straight-through: identity Jacobian
    q.zero_grad()
    z2 = torch.randn(16, 4, requires_grad=True)
    out = q(z2)
    out.loss.backward()
    used = torch.unique(out.ids)
    assert (q.weight.grad[used].abs().sum(-1) > 0).all()  # the codebook loss pulls used codes
    unused = torch.ones(8, dtype=torch.bool)
    unused[used] = False
    assert (q.weight.grad[unused] == 0).all()


def test_kmeans_init_and_dead_code_restart():
    torch.manual_seed(0)
    centres = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0]])
    z = centres[torch.arange(300) % 3] + 0.01 * torch.randn(300, 2)
    q = VectorQuantizer(3, 2, kmeans_init=True).train()
    assert not bool(q.initialized)
    q(z)
    assert bool(q.initialized)
    found = sorted(q.weight.detach().round().tolist())
    assert found == sorted(centres.tolist())
    # a code nobody uses decays below the threshold and restarts at an input
    q2 = VectorQuantizer(4, 2, dead_code_threshold=0.5, usage_decay=0.5).train()
    with torch.no_grad():
        q2.weight.copy_(torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [1e3, 1e3]]))
    for _ in range(3):
        q2(z)
    assert q2.weight.detach()[3].abs().max() < 20  # moved onto the data
    q2.eval()
    before = q2.usage.clone()
    q2(z)
    assert torch.equal(q2.usage, before)  # eval never changes the statistics


@pytest.mark.parametrize("normalize", [False, True])
def test_training_steps_with_restarts_backpropagate(normalize):
    """Forward, backward and an optimizer step, with dead codes restarted along the way: a restart
    must never rewrite the codebook while a step's graph still needs it (Norm VQ saves the
    codebook for F.normalize's backward)."""
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4, normalize=normalize, dead_code_threshold=0.9, usage_decay=0.5).train()
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    z = torch.randn(64, 4) * 0.1 + torch.tensor([5.0, 0.0, 0.0, 0.0])  # one cluster: most codes die
    start = q.weight.detach().clone()
    for _ in range(4):
        out = q(z.clone().requires_grad_(True))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    moved = (q.weight.detach() - start).norm(dim=1) > 1.0
    assert int(moved.sum()) >= 2  # dead codes were restarted onto the data
