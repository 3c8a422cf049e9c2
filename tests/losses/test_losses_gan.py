"""GAN pieces: hinge losses, adaptive weight, warm-up switch, PatchGAN discriminator."""

import pytest
import torch
from torch import nn

from semhitok.losses import PatchDiscriminator, adaptive_weight, disc_factor, hinge_d_loss, hinge_g_loss


def test_hinge_losses_against_hand_values():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 0.5])
    # relu(1 - real) = [0, .5, 2] -> mean 5/6; relu(1 + fake) = [0, 1, 1.5] -> mean 5/6.
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 5 / 6))
    assert hinge_g_loss(fake).item() == pytest.approx(0.5)
    # Confident and correct: zero discriminator loss.
    assert hinge_d_loss(torch.full((4,), 3.0), torch.full((4,), -3.0)).item() == 0.0


def test_adaptive_weight_against_hand_computation():
    """Toy generator y = w . x (one Linear layer, no bias); nll = (y - t)^2, g = -3 y.

    grad_w nll = 2 (y - t) x, grad_w g = -3 x, so the weight is 2|y - t| |x| / (3 |x| + 1e-4).
    """
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0]]))
    x = torch.tensor([[3.0, 4.0]])  # |x| = 5, y = 1.5 - 4 = -2.5
    y = layer(x).sum()
    nll = (y - 1.0) ** 2  # y - t = -3.5
    g = -3.0 * y
    w = adaptive_weight(nll, g, layer.weight)
    expected = 2 * 3.5 * 5 / (3 * 5 + 1e-4)
    assert w.item() == pytest.approx(expected, rel=1e-6)
    assert not w.requires_grad
    # The graph was retained: the caller can still backpropagate the total.
    (nll + w * g).backward()
    assert layer.weight.grad is not None


def test_adaptive_weight_clamped_and_needs_a_graph():
    layer = nn.Linear(2, 1, bias=False)
    y = layer(torch.ones(1, 2)).sum()
    w = adaptive_weight(1e6 * y, 1e-9 * y, layer.weight, max_weight=10.0)
    assert w.item() == 10.0
    with torch.no_grad():
        y2 = layer(torch.ones(1, 2)).sum()
    with pytest.raises(RuntimeError, match="graph"):
        adaptive_weight(y2, y2, layer.weight)


def test_disc_factor_switch():
    assert [disc_factor(s, 10) for s in (0, 9, 10, 11, 10**6)] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert disc_factor(0, 0) == 1.0


@pytest.mark.parametrize("n_layers,size,out", [(1, 32, 14), (2, 32, 6), (3, 64, 6)])
def test_patch_discriminator_shapes_and_layers(n_layers, size, out):
    d = PatchDiscriminator(base_channels=8, n_layers=n_layers)
    assert d(torch.rand(2, 3, size, size)).shape == (2, 1, out, out)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == n_layers + 2
    assert [c.stride[0] for c in convs] == [2] * n_layers + [1, 1]
    assert all(c.kernel_size == (4, 4) for c in convs)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in d.modules()) == n_layers


def test_patch_discriminator_init_and_per_sample():
    torch.manual_seed(0)
    d = PatchDiscriminator(base_channels=32, n_layers=3)
    big = [m.weight for m in d.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() > 100_000]
    assert big and all(abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001 for w in big)
    assert all(abs(m.weight.mean().item() - 1.0) < 0.01 for m in d.modules() if isinstance(m, nn.GroupNorm))
    # GroupNorm: an image's logits do not depend on the rest of the batch (DDP- and split-safe).
    small = PatchDiscriminator(base_channels=8, n_layers=2).train()
    images = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(small(images)[:1], small(images[:1]), rtol=1e-5, atol=1e-6)
