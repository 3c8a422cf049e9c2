"""Does the MLLM draw what the caption says? Two sampling-free measures of caption-following.

Per-id image NLL cannot see it: a caption that names one of 100 class x colour pairs carries at most
``log 100 = 4.6`` nats about a whole image, under 0.07 nats per id of an 8x8 grid, about the NLL's own
noise. Both measures here look at that information directly, teacher-forced on real images:

* **caption information**: for each image, the summed NLL of its image ids after the unconditional
  prompt minus after its true caption, ``sum_i NLL(x_i | <uncond>) - NLL(x_i | caption)``, in nats per
  image. It is how much the caption helps predict the image, the quantity classifier-free guidance
  amplifies. ``<eoi>`` is left out: it always follows the last id, whatever the prompt, so any
  difference there is the prompts' length, not their content. The mean difference at each id
  position is kept too (:attr:`CaptionFollowing.per_position`), so a position effect of the shorter
  unconditional prompt (largest at the first id) stays visible instead of hiding in the sum.
* **generative-classifier accuracy**: the image's true caption against the captions that differ from
  it in one word only (the other colours with the same class, the other classes with the same
  colour; same template, so nearly the same length): how often the true caption gives the image ids
  the lowest NLL. Chance is one over the number of candidates (10% in the mini-world). A tie counts
  as a miss, so a model that ignores the caption scores 0, not 10%.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from ..mllm import SemHiTokMLLM
from ..mllm.collate import pad_sequences
from ..mllm.loss import IGNORE_INDEX, chunked_nll, shifted_targets
from ..mllm.sampling import positions

__all__ = ["CaptionFollowing", "evaluate_caption_following", "image_token_nll"]


@torch.no_grad()
def image_token_nll(
    mm: SemHiTokMLLM, captions: Sequence[str | None], image_ids: Tensor, batch_size: int = 32, progress: bool = False,
) -> Tensor:
    """Teacher-forced NLL of each image's ids after its prompt: (N, L + 1) in nats, the L = h*w
    image ids in raster order, then ``<eoi>``.

    Args:
        captions: one per image; None is the unconditional prompt (``<uncond>``), exactly the one
            the sampler and the training swap use.
        image_ids: (N, h, w) or (N, h*w) tokenizer ids.
    """
    ids = mm.tokenizer.check_ids(image_ids).reshape(len(image_ids), -1).cpu()
    if len(captions) != len(ids) or len(ids) == 0:
        raise ValueError(f"need one caption per image (at least one), got {len(captions)} captions and {len(ids)} images")
    device = next(mm.adapter.parameters()).device
    was_training = mm.training
    mm.eval()
    out = []
    try:
        for start in tqdm(range(0, len(ids), batch_size), desc="image NLL", unit="batch", disable=not progress or None, leave=False):
            rows = range(start, min(start + batch_size, len(ids)))
            seqs = [mm.format.generation(captions[i], ids[i]) for i in rows]
            input_ids, mask, labels = (t.to(device) for t in pad_sequences(seqs, mm.pad_id, "right"))
            hidden = mm.hidden_states(mm.embed(input_ids), mask, positions(mask))
            targets = shifted_targets(labels)
            keep = targets != IGNORE_INDEX  # exactly L + 1 per row, in order (row-major)
            nll = chunked_nll(hidden[keep], targets[keep], mm.joint_logit_parts, mm.config.loss_chunk).float()
            out.append(nll.reshape(len(rows), -1).cpu())
    finally:
        mm.train(was_training)
    return torch.cat(out)


@dataclass
class CaptionFollowing:
    """Caption-following of one model on N labelled images (see the module doc).

    Attributes:
        information: (N,) nats per image, NLL after ``<uncond>`` minus NLL after the true caption,
            summed over the image ids (``<eoi>`` not counted).
        per_position: (L,) the mean of the same difference at each image-id position.
        colour_correct, class_correct: (N,) bool, the generative classifier's verdicts among the
            captions that change only the colour, or only the class.
    """

    information: Tensor
    per_position: Tensor
    colour_correct: Tensor
    class_correct: Tensor

    @property
    def information_mean(self) -> float:
        return float(self.information.mean())

    @property
    def information_se(self) -> float:
        n = len(self.information)
        return float(self.information.std() / n**0.5) if n > 1 else float("nan")

    @property
    def colour_accuracy(self) -> float:
        return float(self.colour_correct.float().mean())

    @property
    def class_accuracy(self) -> float:
        return float(self.class_correct.float().mean())

    def metrics(self) -> dict[str, float]:
        """The headline numbers, as training logs and reports name them."""
        return {
            "caption_info": self.information_mean, "caption_info_se": self.information_se,
            "caption_info_first_id": float(self.per_position[0]),
            "gen_cls_colour": self.colour_accuracy, "gen_cls_class": self.class_accuracy,
        }


def evaluate_caption_following(
    mm: SemHiTokMLLM, image_ids: Tensor, labels: Tensor, colours: Tensor, captions: Sequence[str],
    batch_size: int = 32, progress: bool = False,
) -> CaptionFollowing:
    """Both measures on mini-world images: (N, h, w) ids, their class and colour ids (N,) and
    captions. The candidates keep each caption's template and change one word (see
    :func:`semhitok.data.colour_fashion.caption_variants`)."""
    from ..data.colour_fashion import CLASS_NAMES, COLOUR_NAMES, caption_variants

    n = len(image_ids)
    if not (len(labels) == len(colours) == len(captions) == n) or n == 0:
        raise ValueError(f"need as many labels, colours and captions as images (at least one), got {len(labels)}, {len(colours)}, {len(captions)} for {n}")
    # Every image's prompts in one list: its caption, <uncond>, then the captions with another
    # colour and with another class (the true caption is scored once and shared by both rankings).
    prompts: list[str | None] = []
    for caption, label, colour in zip(captions, labels.tolist(), colours.tolist()):
        variants = caption_variants(caption, label, colour)
        prompts += [caption, None]
        prompts += [variants[(label, c)] for c in range(len(COLOUR_NAMES)) if c != colour]
        prompts += [variants[(k, colour)] for k in range(len(CLASS_NAMES)) if k != label]
    per_image = len(prompts) // n
    flat = image_ids.reshape(n, -1)
    owner = torch.arange(n).repeat_interleave(per_image)
    nll = image_token_nll(mm, prompts, flat[owner], batch_size, progress)[:, :-1].reshape(n, per_image, -1)
    cond, uncond = nll[:, 0], nll[:, 1]
    totals = nll.sum(dim=2)
    other_colours = totals[:, 2 : 2 + len(COLOUR_NAMES) - 1]
    other_classes = totals[:, 2 + len(COLOUR_NAMES) - 1 :]
    diff = uncond - cond
    # Strictly lower than every alternative: a tie (a model blind to the caption) is a miss.
    colour_correct = totals[:, 0] < other_colours.min(dim=1).values
    class_correct = totals[:, 0] < other_classes.min(dim=1).values
    return CaptionFollowing(diff.sum(dim=1), diff.mean(dim=0), colour_correct, class_correct)
