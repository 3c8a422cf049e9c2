"""Vector quantizer whose codebook follows an exponential moving average of its assigned inputs.

This is the semantic codebook ``Q_s`` of SemHiTok stage 1 (VQ-VAE-2 / VQKD style EMA VQ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed as D
from .kmeans import kmeans
from .nearest import nearest_code
from .outputs import QuantizerOutput
from .stats import perplexity


class EMAVectorQuantizer(nn.Module):
    """EMA vector quantizer: nearest code by squared L2, straight-through gradient, commitment loss.

    The codebook is a buffer, never trained by gradient. In ``train()`` mode every forward updates

        N_k <- g N_k + (1 - g) n_k
        S_k <- g S_k + (1 - g) sum_{i: k_i = k} z_i
        c_k  = S_k / N^_k,   N^_k = (N_k + eps) / (sum N + K eps) * sum N   (Laplace smoothing)

    where n_k counts the batch's inputs assigned to code k. Under ``torch.distributed`` the batch
    counts and sums are all-reduced first, and anything random (k-means, restarts) is decided on
    rank 0 and broadcast, so every rank holds the identical codebook.

    Args:
        codebook_size: K, number of codes.
        dim: d, code dimension.
        decay: g, the EMA momentum.
        commitment_weight: beta in ``beta ||z - sg(z_q)||^2``.
        eps: Laplace smoothing constant.
        kmeans_init: initialise the codebook by k-means on the first training batch(es).
        kmeans_iters: Lloyd iterations of that k-means.
        kmeans_max_samples: at most this many inputs (pooled over ranks) feed the k-means.
        dead_code_threshold: in training, a code whose EMA count N_k falls below this is restarted
            at a random input of the current batch (0 disables restarts).
        search_chunk_size: rows per chunk of the nearest-code search (default: bounded memory).
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        decay: float = 0.99,
        commitment_weight: float = 0.25,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        kmeans_max_samples: int = 65536,
        dead_code_threshold: float = 0.0,
        search_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"codebook_size and dim must be >= 1, got {codebook_size}, {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.decay = decay
        self.commitment_weight = commitment_weight
        self.eps = eps
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.kmeans_max_samples = kmeans_max_samples
        self.dead_code_threshold = dead_code_threshold
        self.search_chunk_size = search_chunk_size

        embed = torch.randn(codebook_size, dim)
        self.register_buffer("embed", embed)
        # N_k = 1 and S_k = c_k at start: each code is its own running mean, so a code that is not
        # assigned keeps its position instead of decaying towards zero.
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))

    @property
    def codebook(self) -> Tensor:
        """(K, d) the current codes."""
        return self.embed

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}, decay={self.decay}"

    def lookup(self, ids: Tensor) -> Tensor:
        """(...) ids -> (..., d) codes."""
        return F.embedding(ids, self.embed)

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize (..., d) inputs; in training mode also update the codebook."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected inputs with last dim {self.dim}, got shape {tuple(z.shape)}")
        lead = z.shape[:-1]
        flat = z.reshape(-1, self.dim).float()  # codebook arithmetic stays fp32 under autocast
        # Autocast would run the distance matmuls in bf16/fp16 and flip near ids: search in fp32.
        with torch.no_grad(), torch.autocast(flat.device.type, enabled=False):
            if self.training and not bool(self.initialized):
                self._init_by_kmeans(flat.detach())
            ids = nearest_code(flat, self.embed, self.search_chunk_size)
        z_q = self.lookup(ids)
        commitment = F.mse_loss(flat, z_q)
        quantized = flat + (z_q - flat).detach()

        counts = torch.bincount(ids, minlength=self.codebook_size)
        if self.training:
            self._ema_update(flat.detach(), ids, counts)
            if self.dead_code_threshold > 0:
                self._restart_dead_codes(flat.detach())

        return QuantizerOutput(
            quantized=quantized.view(*lead, self.dim).to(z.dtype),
            ids=ids.view(lead),
            loss=self.commitment_weight * commitment,
            commitment_loss=commitment,
            codebook_loss=commitment.new_zeros(()),
            perplexity=perplexity(counts),
            usage=(counts > 0).float().mean(),
        )

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, ids: Tensor, counts: Tensor) -> None:
        # bincount + index_add instead of a one-hot N x K matrix: O(N d) memory, not O(N K).
        n_k = D.all_reduce_sum_(counts.float())
        sums = D.all_reduce_sum_(torch.zeros_like(self.embed).index_add_(0, ids, flat))
        self.cluster_size.mul_(self.decay).add_(n_k, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.embed.copy_(self.embed_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def _init_by_kmeans(self, flat: Tensor) -> None:
        per_rank = max(1, self.kmeans_max_samples // D.world_size())
        local = flat[torch.randperm(flat.shape[0], device=flat.device)[:per_rank]]
        pool = D.gather_rows(local)
        centroids = kmeans(pool, self.codebook_size, self.kmeans_iters)
        D.broadcast_(centroids)  # rank 0's clustering wins; the others' random draws are discarded
        self.embed.copy_(centroids)
        self.embed_sum.copy_(centroids)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor) -> None:
        dead = self.cluster_size < self.dead_code_threshold  # identical on all ranks
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        # Every rank offers up to n_dead random inputs; rank 0 draws the replacements from the
        # pooled offers and broadcasts them.
        local = flat[torch.randperm(flat.shape[0], device=flat.device)[:n_dead]]
        pool = D.gather_rows(local)
        pick = torch.randint(pool.shape[0], (n_dead,), device=flat.device)
        new_codes = D.broadcast_(pool[pick].contiguous())
        self.embed[dead] = new_codes
        # Reset the EMA statistics so the restarted code is a running mean of its new position with
        # a count that keeps it alive until the next batches can claim it.
        grace = max(1.0, self.dead_code_threshold)
        self.cluster_size[dead] = grace
        self.embed_sum[dead] = new_codes * grace
