"""HierarchicalQuantizer (SGHC) against brute-force and hand-computed references."""

import math

import pytest
import torch

from semhitok.quantizers import HierarchicalQuantizer

from _reference import assert_argmin


def l2n64(x):
    """Explicit float64 l2 normalization along the last dim."""
    x = x.detach().double()
    return x / x.pow(2).sum(-1, keepdim=True).sqrt()


def test_ids_are_argmin_inside_parent_subcodebook():
    """ids == brute-force argmin_j ||l2(p) - l2(C[k, j])||^2 over the parent's m codes, and the restriction matters."""
    K, m, d, n = 6, 5, 8, 600
    hq = HierarchicalQuantizer(K, m, d).eval()
    p = torch.randn(3, 200, d) * torch.rand(3, 200, 1) * 4  # arbitrary norms: only directions matter
    parents = torch.randint(0, K, (3, 200))
    out = hq(p, parents)
    assert out.ids.shape == (3, 200)
    assert int(out.ids.min()) >= 0 and int(out.ids.max()) < m

    pn = l2n64(p.reshape(n, d))
    cn = l2n64(hq.weight)  # (K, m, d)
    flat_parents = parents.reshape(n)
    restricted = torch.stack([((pn[i] - cn[flat_parents[i]]) ** 2).sum(-1) for i in range(n)])  # (n, m)
    assert_argmin(out.ids.reshape(n), restricted)

    # An unrestricted search over all K*m codes mostly lands in another parent's sub-codebook.
    unrestricted = ((pn[:, None] - cn.reshape(K * m, d)[None]) ** 2).sum(-1).argmin(1)
    other_parent = unrestricted // m != flat_parents
    assert other_parent.float().mean() > 0.5
    # ... and then differs from the quantizer's choice, whose code lies in the given parent.
    assert (unrestricted != flat_parents * m + out.ids.reshape(n)).float().mean() > 0.5


def test_one_parent_is_a_flat_normalized_vq_with_brute_force_ids():
    """num_parents=1 (the pixel-only baseline) takes the matmul path: still the brute-force argmin."""
    m, d, n = 3000, 8, 700
    hq = HierarchicalQuantizer(1, m, d).eval()
    p = torch.randn(n, d) * 3
    out = hq(p, torch.zeros(n, dtype=torch.long))
    dist = ((l2n64(p)[:, None] - l2n64(hq.weight[0])[None]) ** 2).sum(-1)
    assert_argmin(out.ids, dist)


def test_codebook_is_normalized_and_quantized_is_the_chosen_code():
    """.codebook is l2(weight) with shape (K,m,d); quantized is unit-norm and equals codebook[parent, id]."""
    K, m, d = 4, 3, 6
    hq = HierarchicalQuantizer(K, m, d)
    hq.weight.data.mul_(torch.rand(K, m, 1) * 5 + 0.1)
    cb = hq.codebook
    assert cb.shape == (K, m, d)
    torch.testing.assert_close(cb.double(), l2n64(hq.weight), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cb.norm(dim=-1), torch.ones(K, m), rtol=0, atol=1e-6)

    p = torch.randn(2, 7, d) * 3
    parents = torch.randint(0, K, (2, 7))
    out = hq.eval()(p, parents)
    assert out.quantized.shape == (2, 7, d)
    torch.testing.assert_close(out.quantized.norm(dim=-1), torch.ones(2, 7), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.quantized, cb[parents, out.ids], rtol=0, atol=1e-6)
    torch.testing.assert_close(hq.lookup(parents, out.ids), cb[parents, out.ids], rtol=0, atol=1e-6)


def test_losses_equal_hand_computation():
    """loss = codebook_weight*mean((l2c - l2p)^2) + commitment_weight*mean((l2p - l2c)^2), both recomputed."""
    cw, beta = 0.6, 0.3
    hq = HierarchicalQuantizer(5, 4, 7, commitment_weight=beta, codebook_weight=cw).eval()
    p = torch.randn(30, 7)
    parents = torch.randint(0, 5, (30,))
    out = hq(p, parents)
    pn, cn = l2n64(p), l2n64(hq.weight)[parents, out.ids]
    mse = sum(((pn[i] - cn[i]) ** 2).sum().item() for i in range(30)) / (30 * 7)
    assert out.codebook_loss.item() == pytest.approx(mse, rel=1e-5)
    assert out.commitment_loss.item() == pytest.approx(mse, rel=1e-5)
    assert out.loss.item() == pytest.approx((cw + beta) * mse, rel=1e-5)


def test_gradients_straight_through_and_only_selected_rows():
    """p gets the straight-through gradient (through the normalization); weight gets it only on chosen rows."""
    K, m, d, n = 4, 5, 6, 9
    cw, beta = 0.8, 0.3
    hq = HierarchicalQuantizer(K, m, d, commitment_weight=beta, codebook_weight=cw).train()
    p = (torch.randn(n, d) * 2).requires_grad_()
    parents = torch.tensor([0, 0, 1, 1, 1, 3, 3, 0, 1])
    W = torch.randn(n, d)
    out = hq(p, parents)
    ((out.quantized * W).sum() + out.loss).backward()

    # Hand reference. u = p/|p|, c = w/|w|; d u / d p = (I - u u^T) / |p|.
    pd, wd = p.detach().double(), hq.weight.detach().double()
    u, c = l2n64(pd), l2n64(wd)[parents, out.ids]
    grad_u = W.double() + beta * 2 * (u - c) / (n * d)  # identity jacobian for quantized + commitment term
    grad_p = (grad_u - u * (u * grad_u).sum(-1, keepdim=True)) / pd.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(p.grad.double(), grad_p, rtol=1e-5, atol=1e-6)

    expected_w = torch.zeros(K, m, d, dtype=torch.float64)
    for i in range(n):
        k, j = int(parents[i]), int(out.ids[i])
        grad_c = cw * 2 * (c[i] - u[i]) / (n * d)  # codebook term; the straight-through path is detached
        wn = wd[k, j].norm()
        expected_w[k, j] += (grad_c - c[i] * (c[i] @ grad_c)) / wn
    torch.testing.assert_close(hq.weight.grad.double(), expected_w, rtol=1e-5, atol=1e-7)

    selected = torch.zeros(K, m, dtype=torch.bool)
    selected[parents, out.ids] = True
    assert (hq.weight.grad[~selected] == 0).all()
    assert (hq.weight.grad[selected].abs().sum(-1) > 0).all()


def test_usage_and_perplexity_by_hand():
    """usage = mean over present parents of (used sub-codes / m); perplexity = exp(entropy) of pair counts."""
    K, m, d = 3, 4, 4
    hq = HierarchicalQuantizer(K, m, d).eval()
    hq.weight.data.copy_(torch.eye(m, d).expand(K, m, d))  # sub-code j points along axis j in every parent
    e = torch.eye(d)
    p = torch.stack([e[0] * 2, e[0] + 0.1 * e[1], e[1] * 3, e[3]])
    parents = torch.tensor([0, 0, 0, 2])
    out = hq(p, parents)
    assert out.ids.tolist() == [0, 0, 1, 3]
    # parent 0 uses {0, 1} of 4, parent 2 uses {3} of 4, parent 1 is absent.
    assert out.usage.item() == pytest.approx((2 / 4 + 1 / 4) / 2)
    probs = [2 / 4, 1 / 4, 1 / 4]
    assert out.perplexity.item() == pytest.approx(math.exp(-sum(q * math.log(q) for q in probs)), rel=1e-5)


def test_invalid_inputs_raise_value_error():
    """Parent ids outside [0, K), parent/input shape mismatch and a wrong feature dim raise ValueError."""
    hq = HierarchicalQuantizer(4, 3, 5)
    p = torch.randn(2, 6, 5)
    with pytest.raises(ValueError):
        hq(p, torch.full((2, 6), 4))
    with pytest.raises(ValueError):
        hq(p, torch.full((2, 6), -1))
    with pytest.raises(ValueError):
        hq(p, torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError):
        hq(p, torch.zeros(12, dtype=torch.long))
    with pytest.raises(ValueError):
        hq(torch.randn(2, 6, 4), torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError):
        HierarchicalQuantizer(0, 3, 5)


def test_dead_subcodes_restart_at_inputs_of_same_parent():
    """Unused sub-codes of parents present in the batch become normalized inputs of that parent; others stay."""
    K, m, d = 4, 6, 5
    hq = HierarchicalQuantizer(K, m, d, dead_code_threshold=1.0, usage_decay=0.5).train()
    weight_before = hq.weight.detach().clone()
    parents = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])
    p = torch.randn(8, d) * 3
    out = hq(p, parents)

    counts = torch.zeros(K, m)
    for i in range(8):
        counts[parents[i], out.ids[i]] += 1
    pn = l2n64(p)
    restarted = 0
    for k in range(K):
        for j in range(m):
            w = hq.weight.detach()[k, j]
            if k in (0, 1) and counts[k, j] == 0:
                # usage_ema = 0.5 * 1 < 1.0: dead, restarted at a normalized input of parent k.
                match = (w.double() - pn).abs().max(-1).values < 1e-6
                assert match.any(), f"sub-code ({k},{j}) is not a normalized input"
                assert (parents[match] == k).all(), f"sub-code ({k},{j}) took an input of another parent"
                assert hq.usage_ema[k, j].item() >= 1.0
                restarted += 1
            else:
                # used sub-codes and sub-codes of absent parents (2, 3) keep their weights.
                assert torch.equal(w, weight_before[k, j]), (k, j)
    assert restarted >= 2 * (m - 4)
    torch.testing.assert_close(hq.usage_ema[2:], torch.full((2, m), 0.5))
    used = counts > 0
    torch.testing.assert_close(hq.usage_ema[used], 0.5 + 0.5 * counts[used])


def test_no_restart_in_eval_or_without_threshold():
    """eval() or dead_code_threshold=0 never change the weight or the usage statistics."""
    for thr, train in ((1.0, False), (0.0, True)):
        hq = HierarchicalQuantizer(3, 8, 4, dead_code_threshold=thr, usage_decay=0.5).train(train)
        before = {k: v.clone() for k, v in hq.state_dict().items()}
        hq(torch.randn(5, 4), torch.tensor([0, 0, 1, 1, 2]))
        for name, value in hq.state_dict().items():
            assert torch.equal(value, before[name]), (thr, train, name)


def test_ids_exact_under_bf16_autocast():
    """Under CPU bf16 autocast the sub-codebook search still matches the float64 brute force."""
    K, m, d, n = 8, 12, 16, 2000
    hq = HierarchicalQuantizer(K, m, d).eval()
    p = torch.randn(n, d)
    parents = torch.randint(0, K, (n,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = hq(p, parents)
    pn, cn = l2n64(p), l2n64(hq.weight)[parents]  # (n, d), (n, m, d)
    assert_argmin(out.ids, ((pn[:, None] - cn) ** 2).sum(-1))
