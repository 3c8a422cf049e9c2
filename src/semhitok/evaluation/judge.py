"""An independent judge for the mini-world: a small CNN that tells class and colour of an image.

Generated or reconstructed images are scored by a network that shares nothing with the tokenizer or
its teacher (different architecture, trained separately, on the real training images only), so a
model cannot score well by reproducing its own teacher's quirks. Its penultimate features also give
a Fréchet distance between sets of images in a space that knows garments and colours.

Saved as ``config.json`` + ``model.safetensors``; ``stage: judge`` in ``semhitok train`` trains one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from ..config_types import ConfigError, check_at_least, check_fields, check_known_keys

__all__ = ["Judge", "JudgeConfig", "JudgeTrainConfig", "JudgeVerdict", "judge_accuracy", "train_judge"]

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class JudgeConfig:
    """Architecture: ``len(widths)`` conv blocks, each halving the side, global pooling, two heads."""

    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 128)
    num_classes: int = 10
    num_colours: int = 10

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 8, ("image_size",))
        check_at_least(self, 1, ("num_classes", "num_colours"))
        if not self.widths or min(self.widths) < 1:
            raise ConfigError("widths", f"must be one or more channel counts >= 1, got {list(self.widths)}")


@dataclass
class JudgeVerdict:
    """What the judge says of a set of images: class ids (B,), colour ids (B,), features (B, D)."""

    classes: Tensor
    colours: Tensor
    features: Tensor


class Judge(nn.Module):
    """(B, 3, S, S) in [0, 1] -> class logits (B, 10), colour logits (B, 10), features (B, D)."""

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        previous = 3
        for i, width in enumerate(config.widths):
            stride = 2  # every block halves the side: 64 px -> 32 -> 16 -> 8 -> 4 (a full-resolution first block cost 4x for little)
            layers += [nn.Conv2d(previous, width, 3, stride, 1), nn.GroupNorm(8, width), nn.GELU(),
                       nn.Conv2d(width, width, 3, 1, 1), nn.GroupNorm(8, width), nn.GELU()]
            previous = width
        self.trunk = nn.Sequential(*layers)
        self.class_head = nn.Linear(previous, config.num_classes)
        self.colour_head = nn.Linear(previous, config.num_colours)

    @property
    def feature_dim(self) -> int:
        return self.config.widths[-1]

    def features(self, images: Tensor) -> Tensor:
        """Pooled penultimate features (B, D): the space of the judge's Fréchet distance."""
        return self.trunk(images * 2.0 - 1.0).mean(dim=(-2, -1))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = self.features(images)
        return self.class_head(f), self.colour_head(f), f

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
        """Predicted (class, colour) ids, each (B,), in eval mode."""
        verdict = self.judge(images, batch_size)
        return verdict.classes, verdict.colours

    @torch.no_grad()
    def judge(self, images: Tensor, batch_size: int = 256) -> JudgeVerdict:
        """Predicted class and colour ids (B,) and pooled features (B, D) of float images in [0, 1],
        in eval mode, ``batch_size`` images at a time."""
        was = self.training
        self.eval()
        classes, colours, features = [], [], []
        for start in range(0, len(images), batch_size):
            c, k, f = self(images[start : start + batch_size])
            classes.append(c.argmax(-1))
            colours.append(k.argmax(-1))
            features.append(f)
        self.train(was)
        return JudgeVerdict(torch.cat(classes), torch.cat(colours), torch.cat(features))

    def save_pretrained(self, folder: str | Path, metadata: dict[str, Any] | None = None) -> None:
        from ..atomic import AtomicDir

        with AtomicDir(folder) as out:
            out.write_text(CONFIG_NAME, json.dumps({**dataclasses.asdict(self.config), **(metadata or {})}, indent=2) + "\n")
            with out.writing(WEIGHTS_NAME) as path:
                save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(path))
            out.commit()

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Judge:
        folder = Path(folder)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"judge folder {folder} has no {name}")
        raw = json.loads((folder / CONFIG_NAME).read_text())
        fields = {f.name for f in dataclasses.fields(JudgeConfig)}
        model = cls(JudgeConfig(**{k: v for k, v in raw.items() if k in fields}))
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)), strict=True)
        return model.eval()


def judge_accuracy(judge: Judge, images: Tensor, labels: Tensor, colours: Tensor) -> dict[str, float]:
    """Class, colour and both-right accuracy of ``judge`` on float images in [0, 1]."""
    pred_class, pred_colour = judge.predict(images)
    ok_class, ok_colour = pred_class == labels, pred_colour == colours
    return {
        "class_accuracy": float(ok_class.float().mean()), "colour_accuracy": float(ok_colour.float().mean()),
        "pair_accuracy": float((ok_class & ok_colour).float().mean()), "images": len(images),
    }


@dataclass
class JudgeTrainConfig:
    """``stage: judge`` (see ``configs/mini/judge.yaml``): data is a colour Fashion-MNIST build."""

    stage: str = "judge"
    data: str | None = None
    model: JudgeConfig = dataclasses.field(default_factory=JudgeConfig)
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    max_steps: int = 2000
    eval_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stage != "judge":
            raise ConfigError("stage", f"a judge config has stage: judge, got {self.stage!r}")
        check_fields(self)  # types (NaN/inf refused) and the model section
        check_at_least(self, 1, ("batch_size", "max_steps", "eval_every"))
        check_at_least(self, 0, ("lr", "weight_decay"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JudgeTrainConfig:
        check_known_keys("", raw, cls)
        return cls(**raw)


def train_judge(config: JudgeTrainConfig, run_dir: str | Path, *, data_path: str | None = None, limit: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train on the real ``train`` images (random flips and small shifts), pick nothing on test;
    report val and test accuracy; write ``run_dir/model``."""
    from ..training.schedule import warmup_cosine
    from ..data.colour_fashion import load_split

    root = data_path or config.data
    if root is None:
        raise ValueError("no training data: give --data DIR (a colour Fashion-MNIST build)")
    train_data, val_data = load_split(root, "train", limit), load_split(root, "val", limit)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    judge = Judge(config.model)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    started, history = time.perf_counter(), []
    with open(run_dir / "metrics.jsonl", "w") as log:
        for step in tqdm(range(config.max_steps), desc="train judge", disable=quiet or None):
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, base_lr=config.lr, warmup_steps=100, total_steps=config.max_steps, min_lr=config.lr * 0.01)
            idx = torch.randint(len(train_data.labels), (config.batch_size,), generator=gen)
            images = train_data.images[idx].float() / 255.0
            flip = torch.rand(config.batch_size, generator=gen) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
            shift = torch.randint(-4, 5, (2,), generator=gen).tolist()  # garments sit anywhere
            images = torch.roll(images, shifts=shift, dims=(-2, -1))
            judge.train()
            class_logits, colour_logits, _ = judge(images)
            loss = F.cross_entropy(class_logits, train_data.labels[idx]) + F.cross_entropy(colour_logits, train_data.colours[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % config.eval_every == 0 or step + 1 == config.max_steps:
                record = {"step": step + 1, "loss": float(loss.detach()), "seconds": time.perf_counter() - started}
                record.update({f"val_{k}": v for k, v in judge_accuracy(judge, val_data.float_images(), val_data.labels, val_data.colours).items()})
                log.write(json.dumps(record) + "\n")
                log.flush()
                history.append(record)
    result: dict[str, Any] = {"steps": config.max_steps, "train_seconds": time.perf_counter() - started, "val": history[-1]}
    if (Path(root) / "labels" / "test.jsonl").is_file():
        test_data = load_split(root, "test", limit)
        result["test"] = judge_accuracy(judge, test_data.float_images(), test_data.labels, test_data.colours)
    judge.save_pretrained(run_dir / "model", metadata={"trained_on": "colour Fashion-MNIST train split (real images)", "result": result})
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
