"""Learning-rate schedule: linear warm-up, then cosine decay to a floor."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Linear from ``base_lr / warmup_steps`` up to ``base_lr`` over the first ``warmup_steps`` steps,
    then half a cosine from ``base_lr`` down to ``min_lr`` at ``total_steps``; ``min_lr`` after.
    """
    if total_steps < 1 or warmup_steps < 0 or base_lr < 0 or min_lr < 0:
        raise ValueError("need total_steps >= 1, warmup_steps >= 0 and non-negative learning rates")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
