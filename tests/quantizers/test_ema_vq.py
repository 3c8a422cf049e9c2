"""EMAVectorQuantizer and nearest_code against brute-force and hand-computed references."""

import pytest
import torch

from semhitok.quantizers import EMAVectorQuantizer, nearest_code
from semhitok.quantizers.nearest import MAX_CHUNK_ELEMENTS

from _reference import assert_argmin


def brute_distances(z, codes):
    """(N, K) float64 squared distances, the exhaustive reference."""
    z64, c64 = z.detach().double(), codes.detach().double()
    return ((z64[:, None] - c64[None]) ** 2).sum(-1)


@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_nearest_code_equals_brute_force_argmin(chunk_size):
    """nearest_code == exhaustive argmin_k ||z - c_k||^2 for every chunking, N not a multiple of the chunk."""
    k, d, n = 1000, 8, 1100
    default_chunk = MAX_CHUNK_ELEMENTS // k
    assert n % default_chunk != 0 and n > default_chunk  # the default chunking has a ragged last chunk
    assert n % 7 != 0
    codes = torch.randn(k, d)
    z = torch.randn(n, d) * 1.5 + 0.3
    ids = nearest_code(z, codes, chunk_size)
    assert_argmin(ids, brute_distances(z, codes))


def test_nearest_code_chunkings_agree_and_small_cases():
    """All chunk sizes give the same ids; N < chunk and K == 1 work; an exact code is found."""
    codes = torch.randn(37, 5)
    z = torch.randn(53, 5)
    base = nearest_code(z, codes, 1)
    for cs in (2, 7, 52, 53, 54, 1000, None):
        assert torch.equal(nearest_code(z, codes, cs), base)
    assert torch.equal(nearest_code(z, codes[:1]), torch.zeros(53, dtype=torch.long))
    perm = torch.randperm(37)
    assert torch.equal(nearest_code(codes[perm], codes), perm)


@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_ema_vq_ids_equal_brute_force(chunk_size):
    """EMAVectorQuantizer ids (train and eval) are the brute-force nearest codes of the codebook in use."""
    vq = EMAVectorQuantizer(codebook_size=300, dim=6, search_chunk_size=chunk_size)
    z = torch.randn(4, 101, 6)  # 404 rows: not a multiple of 7 nor of the default chunk
    vq.eval()
    out = vq(z)
    assert out.ids.shape == (4, 101)
    assert_argmin(out.ids.reshape(-1), brute_distances(z.reshape(-1, 6), vq.codebook))
    # z + sg(z_q - z) equals z_q up to float32 rounding.
    torch.testing.assert_close(out.quantized, vq.codebook[out.ids], rtol=0, atol=1e-6)

    vq.train()
    before = vq.codebook.clone()
    out = vq(z)
    assert not torch.equal(vq.codebook, before)  # the update happened, after the search
    assert_argmin(out.ids.reshape(-1), brute_distances(z.reshape(-1, 6), before))


def test_ema_update_equals_hand_computation():
    """One train step: N_k <- gN_k+(1-g)n_k, S_k <- gS_k+(1-g)sum z, c_k = S_k / N^_k (Laplace smoothed)."""
    g, eps, beta = 0.8, 0.1, 0.7  # a large eps so that the smoothing visibly matters
    vq = EMAVectorQuantizer(codebook_size=3, dim=2, decay=g, eps=eps, commitment_weight=beta).train()
    embed = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]
    size = [2.0, 0.5, 1.0]
    esum = [[1.0, 1.0], [4.0, 0.0], [0.0, 3.0]]  # deliberately not embed * size
    vq.embed.copy_(torch.tensor(embed))
    vq.cluster_size.copy_(torch.tensor(size))
    vq.embed_sum.copy_(torch.tensor(esum))
    batch = [[0.5, 0.2], [-0.3, 0.1], [9.0, 1.0], [0.1, -0.4], [11.0, -0.5], [0.2, 0.3]]
    z = torch.tensor(batch).view(2, 3, 2)

    out = vq(z)

    # Hand computation with explicit loops.
    K, d = 3, 2
    ids = []
    for x in batch:
        dists = [sum((x[j] - embed[k][j]) ** 2 for j in range(d)) for k in range(K)]
        ids.append(min(range(K), key=lambda k: dists[k]))
    assert out.ids.view(-1).tolist() == ids == [0, 0, 1, 0, 1, 0]
    n = [sum(1 for i in ids if i == k) for k in range(K)]
    sums = [[sum(batch[i][j] for i in range(len(batch)) if ids[i] == k) for j in range(d)] for k in range(K)]
    new_size = [g * size[k] + (1 - g) * n[k] for k in range(K)]
    new_sum = [[g * esum[k][j] + (1 - g) * sums[k][j] for j in range(d)] for k in range(K)]
    total = sum(new_size)
    smoothed = [(new_size[k] + eps) / (total + K * eps) * total for k in range(K)]
    new_embed = [[new_sum[k][j] / smoothed[k] for j in range(d)] for k in range(K)]

    torch.testing.assert_close(vq.cluster_size, torch.tensor(new_size), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(vq.embed_sum, torch.tensor(new_sum), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(vq.embed, torch.tensor(new_embed), rtol=1e-6, atol=1e-6)
    # Smoothing changes the result here, so the check above would catch c_k = S_k / N_k.
    unsmoothed = torch.tensor(new_sum) / torch.tensor(new_size)[:, None]
    assert (unsmoothed - torch.tensor(new_embed)).abs().max() > 1e-3

    # The output and the loss use the codebook from before the update.
    zq = [embed[i] for i in ids]
    torch.testing.assert_close(out.quantized.view(-1, 2), torch.tensor(zq), rtol=0, atol=1e-6)
    assert not torch.allclose(out.quantized.view(-1, 2), vq.embed[out.ids.view(-1)], atol=1e-2)
    mse = sum((batch[i][j] - zq[i][j]) ** 2 for i in range(len(batch)) for j in range(d)) / (len(batch) * d)
    assert out.commitment_loss.item() == pytest.approx(mse, rel=1e-6)
    assert out.loss.item() == pytest.approx(beta * mse, rel=1e-6)


def test_eval_mode_leaves_buffers_unchanged():
    """eval() forwards never touch embed, cluster_size, embed_sum or initialized."""
    for kmeans_init in (False, True):
        vq = EMAVectorQuantizer(16, 4, kmeans_init=kmeans_init, dead_code_threshold=5.0).eval()
        before = {k: v.clone() for k, v in vq.state_dict().items()}
        for _ in range(2):
            vq(torch.randn(50, 4) * 3)
        after = vq.state_dict()
        for name, value in before.items():
            assert torch.equal(after[name], value), name


def test_straight_through_gradient_and_commitment_loss():
    """Gradient reaches the encoder through an identity jacobian; the codebook gets none."""
    beta, d = 0.7, 3
    enc = torch.nn.Linear(5, d)
    vq = EMAVectorQuantizer(codebook_size=8, dim=d, commitment_weight=beta).train()
    x = torch.randn(6, 4, 5)
    z = enc(x)
    z.retain_grad()
    codebook_before = vq.codebook.clone()
    out = vq(z)
    zq = codebook_before[out.ids]

    torch.testing.assert_close(out.commitment_loss, ((z.detach() - zq) ** 2).mean())
    torch.testing.assert_close(out.loss, beta * ((z.detach() - zq) ** 2).mean())
    assert out.codebook_loss.item() == 0.0

    loss = (out.quantized**2).sum() + out.loss
    loss.backward()

    # Reference: quantized has value zq and identity jacobian wrt z; the loss term is beta*mean((z - sg(zq))^2).
    expected = 2 * zq + beta * 2 * (z.detach() - zq) / z.numel()
    torch.testing.assert_close(z.grad, expected, rtol=1e-5, atol=1e-6)
    g2 = expected.reshape(-1, d)
    torch.testing.assert_close(enc.weight.grad, g2.t() @ x.reshape(-1, 5), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.bias.grad, g2.sum(0), rtol=1e-5, atol=1e-5)
    assert enc.weight.grad.abs().sum() > 0

    assert not vq.embed.requires_grad and vq.embed.grad is None
    assert list(vq.parameters()) == []
    assert any(b is vq.embed for b in vq.buffers())


def _assign_to_nearest(x, codes):
    return brute_distances(x, codes).argmin(1)


def test_kmeans_init_gives_lloyd_centroids():
    """First train forward sets initialized and makes every code the mean of the data nearest to it."""
    centers = torch.tensor([[10.0, 10.0], [10.0, -10.0], [-10.0, 10.0], [-10.0, -10.0]])
    x = (centers[:, None] + 0.3 * torch.randn(4, 100, 2)).reshape(-1, 2)
    x = x[torch.randperm(400)]
    vq = EMAVectorQuantizer(4, 2, kmeans_init=True, kmeans_iters=20).train()
    random_codebook = vq.codebook.clone()
    assert not bool(vq.initialized)
    out = vq(x)
    assert bool(vq.initialized)
    assert (vq.codebook - random_codebook).abs().max() > 1.0

    # out.quantized holds the k-means centroids (pre-EMA codebook); after the EMA step the codes
    # stay there, because a centroid is the mean of its assigned inputs (up to the eps smoothing).
    assign = _assign_to_nearest(x, vq.codebook)
    for k in range(4):
        members = x[assign == k]
        assert members.shape[0] > 0
        torch.testing.assert_close(vq.codebook[k], members.mean(0), rtol=0, atol=1e-3)
    used = out.ids.unique()
    for k in used.tolist():
        torch.testing.assert_close(out.quantized[out.ids == k].mean(0), x[out.ids == k].mean(0), rtol=0, atol=1e-3)

    # A later train forward does not re-initialize: the codebook only moves by the EMA step.
    before = vq.codebook.clone()
    vq(x)
    torch.testing.assert_close(vq.codebook, before, rtol=0, atol=1e-3)


def test_kmeans_init_recovers_distinct_points():
    """K points from K separated clusters, K codes: the initial codebook is exactly those points, all used."""
    centers = torch.tensor([[10.0, 10.0], [10.0, -10.0], [-10.0, 10.0], [-10.0, -10.0]])
    x = centers + 0.1 * torch.randn(4, 2)
    vq = EMAVectorQuantizer(4, 2, kmeans_init=True).train()
    out = vq(x)
    assert sorted(out.ids.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(out.quantized, x, rtol=0, atol=1e-5)
    dist_to_centers = torch.cdist(vq.codebook, centers)
    assert dist_to_centers.min(1).values.max() < 1.0
    assert sorted(dist_to_centers.argmin(1).tolist()) == [0, 1, 2, 3]


def test_eval_forward_never_initializes():
    """An eval() forward with kmeans_init=True leaves initialized False and the codebook as it was."""
    vq = EMAVectorQuantizer(4, 2, kmeans_init=True).eval()
    before = vq.codebook.clone()
    vq(torch.randn(64, 2) * 10)
    assert not bool(vq.initialized)
    assert torch.equal(vq.codebook, before)
    vq.train()
    vq(torch.randn(64, 2) * 10)
    assert bool(vq.initialized)


def test_dead_codes_restart_at_batch_inputs():
    """Unassigned codes (N_k below threshold) become exact input rows; their statistics are reset consistently."""
    K, d, g, thr = 8, 8, 0.5, 0.9
    vq = EMAVectorQuantizer(K, d, decay=g, dead_code_threshold=thr).train()
    vq.embed.copy_(10 * torch.eye(K, d))
    vq.embed_sum.copy_(vq.embed)
    vq.cluster_size.fill_(1.0)
    owners = torch.tensor([0, 1, 2]).repeat_interleave(torch.tensor([7, 6, 7]))
    z = vq.embed[owners] + 0.1 * torch.randn(20, d)
    out = vq(z)
    assert torch.equal(out.ids, owners)

    dead = [3, 4, 5, 6, 7]  # never assigned: N_k = g * 1 = 0.5 < 0.9
    for k in dead:
        assert (z == vq.embed[k]).all(dim=1).any(), f"code {k} is not an input row"
        assert vq.cluster_size[k] >= thr  # alive after the restart
        torch.testing.assert_close(vq.embed_sum[k], vq.embed[k] * vq.cluster_size[k], rtol=1e-6, atol=1e-6)

    # The live codes follow the EMA formula (the smoothing uses the counts before the restart).
    n = torch.bincount(owners, minlength=K).double()
    size = g * 1.0 + (1 - g) * n
    total = size.sum()
    smoothed = (size + vq.eps) / (total + K * vq.eps) * total
    for k in (0, 1, 2):
        s = g * 10 * torch.eye(K, d, dtype=torch.float64)[k] + (1 - g) * z[owners == k].double().sum(0)
        assert vq.cluster_size[k].item() == pytest.approx(size[k].item(), rel=1e-6)
        torch.testing.assert_close(vq.embed_sum[k].double(), s, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(vq.embed[k].double(), s / smoothed[k], rtol=1e-5, atol=1e-5)
        assert not (z == vq.embed[k]).all(dim=1).any()


def test_no_restart_without_threshold():
    """With dead_code_threshold=0 an unassigned code only decays by the EMA step; it never jumps to an input."""
    K, d = 8, 8
    vq = EMAVectorQuantizer(K, d, decay=0.5).train()
    vq.embed.copy_(10 * torch.eye(K, d))
    vq.embed_sum.copy_(vq.embed)
    z = vq.embed[torch.zeros(10, dtype=torch.long)] + 0.1 * torch.randn(10, d)
    vq(z)
    for k in range(1, K):
        assert not (z == vq.embed[k]).all(dim=1).any()
        assert torch.allclose(vq.embed_sum[k], 5 * torch.eye(K, d)[k])


def test_constructor_and_input_validation():
    """Bad sizes, decay, threshold or input dim raise ValueError."""
    with pytest.raises(ValueError):
        EMAVectorQuantizer(0, 4)
    with pytest.raises(ValueError):
        EMAVectorQuantizer(4, 0)
    with pytest.raises(ValueError):
        EMAVectorQuantizer(4, 4, decay=1.0)
    with pytest.raises(ValueError):
        EMAVectorQuantizer(4, 4, dead_code_threshold=-1.0)
    with pytest.raises(ValueError):
        EMAVectorQuantizer(4, 4)(torch.randn(3, 5))


def test_ids_exact_under_bf16_autocast():
    """Under CPU bf16 autocast the search still returns the float64 brute-force nearest codes."""
    vq = EMAVectorQuantizer(512, 16).eval()
    z = torch.randn(2000, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
    assert_argmin(out.ids, brute_distances(z, vq.codebook))


def test_nearest_code_is_exact_for_features_far_from_the_origin():
    """||c||^2 - 2c.z cancels badly in fp32 at large offsets; the search centres the data first.

    Without centring, an offset of 100 picked codes up to 0.57% farther than the nearest.
    """
    codebook = torch.randn(512, 16, dtype=torch.float64) + 100.0
    z = torch.randn(2000, 16, dtype=torch.float64) + 100.0
    ids = nearest_code(z.float(), codebook.float())
    dist = torch.cdist(z, codebook).pow(2)
    gap = dist.gather(1, ids[:, None]).squeeze(1) - dist.min(dim=1).values
    assert float((gap / dist.min(dim=1).values).max()) <= 1e-5
