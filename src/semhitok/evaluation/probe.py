"""Linear probes: how much of a label a representation carries, as test accuracy.

The mini-world's understanding proxy (the paper measures understanding with an MLLM trained on
each tokenizer's tokens, Tab. 4/9): a multinomial logistic regression on the mean-pooled token
representation of each image, fit on the training split and scored on a held-out split. The same
probe scores the continuous teacher features, SemHiTok's quantized semantic codes and the codes of
a pixel-only tokenizer, so the numbers compare representations, not probe designs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ProbeResult", "linear_probe"]


@dataclass
class ProbeResult:
    train_accuracy: float
    test_accuracy: float


def linear_probe(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, num_classes: int | None = None,
    weight_decay: float = 1e-4, steps: int = 300, lr: float = 0.5, seed: int = 0,
) -> ProbeResult:
    """Fit softmax regression on standardised ``train_x`` (N, D) with full-batch L-BFGS.

    Features are centred and scaled with the training set's mean and std (so the weight decay means
    the same for every representation); the test set is transformed with the same numbers.
    Deterministic: full batch, fixed initialisation (zeros), no data order.
    """
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(train_x.shape)} and {tuple(test_x.shape)}")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("one label per feature row")
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    x = train_x.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-8)
    x = (x - mean) / std
    xt = (test_x.double() - mean) / std
    torch.manual_seed(seed)
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=lr, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")
    y = train_y.long()

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        train_acc = float(((x @ w + b).argmax(1) == y).double().mean())
        test_acc = float(((xt @ w + b).argmax(1) == test_y.long()).double().mean())
    return ProbeResult(train_acc, test_acc)
