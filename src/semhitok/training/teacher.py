"""Train the mini-world's text-aligned teacher: a small SigLIP image tower, LiT-style.

SemHiTok's stage 1 needs a frozen *text-aligned* encoder (the paper uses SigLIP). No SigLIP weights
exist offline, so for the mini-world we train one here, the way SigLIP and LiT are trained:

* text tower: a frozen causal LM (SmolLM2-135M-Instruct) -> mean-pooled caption embedding, then a
  *trainable* linear projection (LiT: "locked image" becomes "locked text" here; the LM is far too
  big to fine-tune on a laptop, and its embeddings are computed once per unique caption and cached);
* image tower: a Hugging Face ``SiglipVisionModel`` (ViT + attention-pooling head) from scratch;
* loss: SigLIP's pairwise sigmoid loss ``-1/|B| sum_ij log sigmoid(y_ij (t x_i.y_j + b))`` with a
  learnable temperature ``t`` (init 10) and bias ``b`` (init -10), y_ij = +1 for a positive pair.
  Pairs of images whose captions name the same garment in the same colour are positives too: a
  batch of 256 draws from only 100 such contents (600 captions with the templates), and calling
  "a red coat" and "a photo of a red coat" a negative pair asks the image tower to tell apart two
  texts no image can tell apart. (A first run that counted only identical strings as positives
  reached 43% zero-shot class accuracy at step 1000 against 99.6% colour.) The content of a
  caption is read from the build's labels file, which holds exactly the words the caption names.

The result is saved as a plain Hugging Face ``SiglipVisionModel`` folder (``config.json``,
``model.safetensors``, ``preprocessor_config.json``), so SemHiTok loads it exactly like a real SigLIP
through ``teacher_config_from_folder``; the text head and the class x colour prompt embeddings for
zero-shot evaluation sit beside it in ``text_head.safetensors`` / ``zero_shot.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from ..config_types import ConfigError, check_at_least, check_fields, check_known_keys
from ..data.colour_fashion import CLASS_NAMES, COLOUR_NAMES, HELD_OUT_PAIRS, TEMPLATES, LabelledSplit, caption_for, load_split
from .checkpoint import last_good_checkpoint, load_checkpoint, save_checkpoint
from .schedule import warmup_cosine

__all__ = ["TeacherTrainConfig", "TeacherTower", "train_teacher", "zero_shot_accuracy"]


@dataclass
class TeacherModelConfig:
    """The image tower (a SigLIP vision transformer with its attention-pooling head)."""

    image_size: int = 64
    patch_size: int = 8
    width: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 1, ("image_size", "patch_size", "width", "depth", "num_heads"))
        if self.mlp_ratio <= 0:
            raise ConfigError("mlp_ratio", f"must be > 0, got {self.mlp_ratio}")
        if self.image_size % self.patch_size:
            raise ConfigError("image_size", f"must be a multiple of patch_size {self.patch_size}, got {self.image_size}")

    def hf_config(self) -> Any:
        from transformers import SiglipVisionConfig

        return SiglipVisionConfig(
            image_size=self.image_size, patch_size=self.patch_size, hidden_size=self.width,
            intermediate_size=int(self.width * self.mlp_ratio), num_hidden_layers=self.depth,
            num_attention_heads=self.num_heads, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
            num_channels=3, vision_use_head=True,
        )


@dataclass
class TeacherTrainConfig:
    """Config of ``stage: teacher`` runs (see ``configs/mini/teacher.yaml``).

    Attributes:
        data: a colour Fashion-MNIST build (``semhitok data colour-fashion-mnist``): its
            ``images/{split}`` folders and ``labels/{split}.jsonl`` are read.
        text_model: the frozen LM giving caption embeddings (a name or a local HF folder).
        batch_size: images per step (the sigmoid loss has no all-gather: this is the whole batch).
        init: a teacher folder written by an earlier run (``RUN/model``) to start from instead of
            random weights (same architecture; its text head and temperature come along).
        shift: random translation of each training image by up to this many pixels (reflect
            padding): a ViT with no convolutions has no translation invariance of its own, and 55k
            images are too few for it to learn one from the data alone.
        checkpoint_every: steps between resumable checkpoints in ``RUN/checkpoints``.
    """

    stage: str = "teacher"
    data: str | None = None
    text_model: str = "smollm2-135m"
    model: TeacherModelConfig = field(default_factory=TeacherModelConfig)
    batch_size: int = 256
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 200
    max_steps: int = 3000
    eval_every: int = 500
    log_every: int = 50
    checkpoint_every: int = 500
    shift: int = 0
    init: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stage != "teacher":
            raise ConfigError("stage", f"a teacher config has stage: teacher, got {self.stage!r}")
        check_fields(self)  # types (NaN/inf refused) and the model section
        check_at_least(self, 1, ("batch_size", "max_steps", "eval_every", "log_every", "checkpoint_every"))
        check_at_least(self, 0, ("lr", "min_lr", "weight_decay", "warmup_steps", "shift"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TeacherTrainConfig:
        check_known_keys("", raw, cls)
        return cls(**raw)


class TeacherTower(nn.Module):
    """Image tower + trainable text projection + SigLIP's temperature and bias."""

    def __init__(self, config: TeacherModelConfig, text_dim: int) -> None:
        super().__init__()
        from transformers import SiglipVisionModel

        self.vision = SiglipVisionModel(config.hf_config())
        self.text_proj = nn.Linear(text_dim, config.width)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    def embed_images(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1] -> l2-normalised (B, width) pooled embeddings."""
        pixel_values = (images - 0.5) / 0.5  # SigLIP's normalisation (mean = std = 0.5)
        return F.normalize(self.vision(pixel_values=pixel_values).pooler_output, dim=-1)

    def embed_texts(self, text_features: Tensor) -> Tensor:
        return F.normalize(self.text_proj(text_features), dim=-1)

    def sigmoid_loss(self, image_emb: Tensor, text_emb: Tensor, positives: Tensor) -> Tensor:
        """SigLIP's loss; ``positives`` is a (B, B) bool matrix (True on the diagonal at least)."""
        logits = image_emb @ text_emb.T * self.logit_scale.exp() + self.logit_bias
        signs = positives.float() * 2.0 - 1.0
        return -F.logsigmoid(signs * logits).sum() / image_emb.shape[0]


def _text_features(captions: list[str], text_model: str, cache: Path) -> dict[str, Tensor]:
    """Embeddings of the distinct captions, cached in ``cache`` (keyed by the caption list)."""
    distinct = sorted(set(captions))
    key = hashlib.sha256(json.dumps([text_model, distinct]).encode()).hexdigest()[:16]
    if cache.is_file():
        stored = load_file(str(cache))
        if "key_" + key in stored:
            return dict(zip(distinct, stored["features"]))
    from ..llm import caption_embeddings, load_causal_lm

    model, tokenizer = load_causal_lm(text_model)
    features = caption_embeddings(distinct, model, tokenizer)
    save_file({"features": features.contiguous(), "key_" + key: torch.zeros(1)}, str(cache))
    return dict(zip(distinct, features))


def prompt_captions() -> list[tuple[int, int, str]]:
    """Every (class, colour, caption) of every template: the zero-shot prompt set."""
    return [(c, k, caption_for(c, k, t)) for c in range(len(CLASS_NAMES)) for k in range(len(COLOUR_NAMES)) for t in range(len(TEMPLATES))]


@torch.no_grad()
def zero_shot_classifier(tower: TeacherTower, features: dict[str, Tensor]) -> Tensor:
    """(10 * 10, width): per class x colour pair, the normalised mean of its templates' embeddings."""
    prompts = prompt_captions()
    emb = tower.embed_texts(torch.stack([features[p] for _, _, p in prompts]))
    return F.normalize(emb.view(len(CLASS_NAMES) * len(COLOUR_NAMES), len(TEMPLATES), -1).mean(1), dim=-1)


@torch.no_grad()
def zero_shot_accuracy(tower: TeacherTower, classifier: Tensor, data: LabelledSplit, batch_size: int = 512) -> dict[str, float]:
    """Class and colour accuracy of the best-scoring class x colour prompt."""
    tower.eval()
    hits_cls = hits_col = hits_both = 0
    for start in range(0, len(data.captions), batch_size):
        images = data.images[start : start + batch_size].float() / 255.0
        best = (tower.embed_images(images) @ classifier.T).argmax(-1)
        cls, col = best // len(COLOUR_NAMES), best % len(COLOUR_NAMES)
        ok_cls = cls == data.labels[start : start + batch_size]
        ok_col = col == data.colours[start : start + batch_size]
        hits_cls += int(ok_cls.sum())
        hits_col += int(ok_col.sum())
        hits_both += int((ok_cls & ok_col).sum())
    n = len(data.captions)
    return {"class_accuracy": hits_cls / n, "colour_accuracy": hits_col / n, "pair_accuracy": hits_both / n, "images": n}


# ---- training -----------------------------------------------------------------------------------
def random_shift(images: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Translate each (3, S, S) image by its own offset in [-max_shift, max_shift]^2 (reflect padding)."""
    if max_shift == 0:
        return images
    size = images.shape[-1]
    padded = F.pad(images, (max_shift,) * 4, mode="reflect")
    dy, dx = torch.randint(2 * max_shift + 1, (2, images.shape[0]), generator=gen)
    rows = (dy.view(-1, 1) + torch.arange(size)).view(-1, 1, size, 1).expand(-1, 3, size, padded.shape[-1])
    cols = (dx.view(-1, 1) + torch.arange(size)).view(-1, 1, 1, size).expand(-1, 3, size, size)
    return padded.gather(2, rows).gather(3, cols)


def load_teacher_tower(folder: str | Path, config: TeacherModelConfig, text_dim: int) -> TeacherTower:
    """A :class:`TeacherTower` with the weights of a saved teacher folder (``init:``)."""
    folder = Path(folder)
    for name in ("model.safetensors", "text_head.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"init: {folder} is not a teacher folder written by `stage: teacher` (no {name})")
    tower = TeacherTower(config, text_dim)
    vision = load_file(str(folder / "model.safetensors"))
    head = load_file(str(folder / "text_head.safetensors"))
    try:
        tower.vision.load_state_dict(vision, strict=True)
        tower.text_proj.load_state_dict({"weight": head["text_proj.weight"], "bias": head["text_proj.bias"]})
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"init: {folder} does not fit this teacher's model section ({str(exc).splitlines()[0]})") from exc
    with torch.no_grad():
        tower.logit_scale.copy_(head["logit_scale"].reshape(()))
        tower.logit_bias.copy_(head["logit_bias"].reshape(()))
    return tower


def train_teacher(config: TeacherTrainConfig, run_dir: str | Path, *, data_path: str | None = None, limit: int | None = None, quiet: bool = False, resume: bool = False) -> dict[str, Any]:
    """Train the teacher; writes ``run_dir/model`` (a SiglipVisionModel folder) and returns the metrics.

    With ``resume``, continue from the newest checkpoint in ``run_dir/checkpoints`` (the same
    batches and augmentations follow as in an uninterrupted run)."""
    run_dir = Path(run_dir)
    root = data_path or config.data
    if root is None:
        raise ValueError("no training data: give --data DIR (a colour Fashion-MNIST build) or data: in the config")
    train_data = load_split(root, "train", limit)
    val_data = load_split(root, "val", limit)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    all_captions = train_data.captions + [p for _, _, p in prompt_captions()]
    features = _text_features(all_captions, config.text_model, run_dir / "text_features.safetensors")
    train_text = torch.stack([features[c] for c in train_data.captions])
    content_ids = train_data.labels * len(COLOUR_NAMES) + train_data.colours  # what the caption names

    torch.manual_seed(config.seed)
    if config.init is not None:
        tower = load_teacher_tower(config.init, config.model, text_dim=train_text.shape[1])
    else:
        tower = TeacherTower(config.model, text_dim=train_text.shape[1])
    decay = [p for n, p in tower.named_parameters() if p.ndim >= 2 and "position_embedding" not in n]
    no_decay = [p for n, p in tower.named_parameters() if not (p.ndim >= 2 and "position_embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(config.seed)
    first_step, seconds_before, history = 0, 0.0, []
    checkpoint = last_good_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: {run_dir} has no checkpoint to resume from")
    if checkpoint is not None:
        state = load_checkpoint(checkpoint.path, tower)
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        first_step, seconds_before = checkpoint.step, float(state["seconds"])
        history = [r for r in _read_jsonl(run_dir / "metrics.jsonl") if r["step"] <= first_step]
    with open(run_dir / "metrics.jsonl", "w") as out:  # drop records past the checkpoint
        out.writelines(json.dumps(r) + "\n" for r in history)
    metrics_file = open(run_dir / "metrics.jsonl", "a")
    bar = tqdm(total=config.max_steps, initial=first_step, desc="train teacher", disable=quiet or None, dynamic_ncols=True)
    started = time.perf_counter() - seconds_before
    try:
        for step in range(first_step, config.max_steps):
            lr = warmup_cosine(step, base_lr=config.lr, warmup_steps=config.warmup_steps, total_steps=config.max_steps, min_lr=config.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = torch.randint(len(train_data.captions), (config.batch_size,), generator=gen)
            images = train_data.images[idx].float() / 255.0
            flip = torch.rand(config.batch_size, generator=gen) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)  # colour and class survive a mirror
            images = random_shift(images, config.shift, gen)
            tower.train()
            positives = content_ids[idx].unsqueeze(0) == content_ids[idx].unsqueeze(1)
            loss = tower.sigmoid_loss(tower.embed_images(images), tower.embed_texts(train_text[idx]), positives)
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite teacher loss at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tower.parameters(), 1.0)
            optimizer.step()
            bar.update(1)
            record: dict[str, Any] = {"step": step + 1, "loss": float(loss.detach()), "lr": lr, "t": float(tower.logit_scale.detach().exp()), "b": float(tower.logit_bias.detach())}
            if (step + 1) % config.eval_every == 0 or step + 1 == config.max_steps:
                record.update({f"val_{k}": v for k, v in zero_shot_accuracy(tower, zero_shot_classifier(tower, features), val_data).items()})
            if (step + 1) % config.log_every == 0 or "val_class_accuracy" in record:
                record["seconds"] = time.perf_counter() - started
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                history.append(record)
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k in ("loss", "val_class_accuracy", "val_colour_accuracy")}, refresh=False)
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.max_steps:
                state = {"optimizer": optimizer.state_dict(), "generator": gen.get_state(), "seconds": time.perf_counter() - started}
                save_checkpoint(run_dir, step + 1, tower, state, keep_last=1, meta={"loss": record["loss"]})
    finally:
        bar.close()
        metrics_file.close()
    seconds = time.perf_counter() - started
    classifier = zero_shot_classifier(tower, features)
    result: dict[str, Any] = {"steps": config.max_steps, "init": config.init, "train_seconds": seconds, "images_seen": config.max_steps * config.batch_size, "val": history[-1]}
    if (Path(root) / "labels" / "test.jsonl").is_file():
        test_data = load_split(root, "test", limit)
        result["test"] = zero_shot_accuracy(tower, classifier, test_data)
        held = torch.tensor([(int(c), int(k)) in HELD_OUT_PAIRS for c, k in zip(test_data.labels, test_data.colours)])
        if held.any():  # class x colour pairs never seen in training: composition
            subset = LabelledSplit(test_data.images[held], [c for c, h in zip(test_data.captions, held) if h], test_data.labels[held], test_data.colours[held])
            result["test_held_out_pairs"] = zero_shot_accuracy(tower, classifier, subset)
    save_teacher(tower, classifier, run_dir / "model")
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_teacher(tower: TeacherTower, classifier: Tensor, folder: Path) -> None:
    """A SiglipVisionModel folder + ``text_head.safetensors`` + ``zero_shot.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    tower.vision.save_pretrained(folder, safe_serialization=True)
    size = tower.vision.config.image_size
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
        "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }, indent=2) + "\n")
    save_file({
        "text_proj.weight": tower.text_proj.weight.detach().contiguous(), "text_proj.bias": tower.text_proj.bias.detach().contiguous(),
        "logit_scale": tower.logit_scale.detach().reshape(1), "logit_bias": tower.logit_bias.detach().reshape(1),
        "zero_shot_classifier": classifier.contiguous(),
    }, str(folder / "text_head.safetensors"))
    (folder / "zero_shot.json").write_text(json.dumps({
        "rows": [[CLASS_NAMES[c], COLOUR_NAMES[k]] for c in range(len(CLASS_NAMES)) for k in range(len(COLOUR_NAMES))],
        "templates": list(TEMPLATES),
        "note": "zero_shot_classifier row r = class r // 10, colour r % 10: the l2-normalised mean of the templates' projected caption embeddings",
    }, indent=2) + "\n")
