"""Caption-following measures against a sample-by-sample reference, and their edge cases."""

from __future__ import annotations

import pytest
import torch

from semhitok.data.colour_fashion import (
    CLASS_NAMES,
    COLOUR_NAMES,
    caption_for,
    caption_variants,
    load_split,
)
from semhitok.evaluation import caption_following
from semhitok.evaluation.caption_following import (
    evaluate_caption_following,
    image_token_nll,
)
from semhitok.mllm import SemHiTokMLLM


def test_caption_variants_keep_the_template_and_change_one_word():
    caption = caption_for(9, 1, 1)  # "a photo of an orange ankle boot"
    assert caption == "a photo of an orange ankle boot"
    variants = caption_variants(caption, 9, 1)
    assert len(variants) == len(CLASS_NAMES) * len(COLOUR_NAMES)
    assert variants[(9, 1)] == caption
    assert variants[(9, 0)] == "a photo of a red ankle boot"
    assert variants[(3, 1)] == "a photo of an orange dress"
    with pytest.raises(ValueError, match="no template"):
        caption_variants("a red ankle boot", 9, 1)  # the caption names another colour


def test_image_token_nll_matches_unpadded_sequences(trained, mini_slice, reference_image_nll):
    mm = SemHiTokMLLM.from_pretrained(trained).eval()
    test = load_split(mini_slice, "test", limit=3)
    ids = mm.tokenizer.encode(test.float_images()).ids
    captions = [test.captions[0], None, "a much longer caption than the others, to pad them"]
    got = image_token_nll(mm, captions, ids, batch_size=2)
    assert got.shape == (3, ids[0].numel() + 1)
    for row, (caption, image) in enumerate(zip(captions, ids)):
        torch.testing.assert_close(got[row], reference_image_nll(mm, caption, image), rtol=1e-5, atol=1e-6)


def test_caption_following_matches_its_definition(trained, mini_slice, reference_image_nll):
    """Information = summed NLL after <uncond> minus after the caption (no <eoi>); the generative
    classifier = the true caption strictly below the 9 one-word variants, checked by brute force."""
    mm = SemHiTokMLLM.from_pretrained(trained).eval()
    test = load_split(mini_slice, "test", limit=4)
    ids = mm.tokenizer.encode(test.float_images()).ids
    got = evaluate_caption_following(mm, ids, test.labels, test.colours, test.captions, batch_size=7)

    info, diffs, colour_ok, class_ok = [], [], [], []
    for image, caption, label, colour in zip(ids, test.captions, test.labels.tolist(), test.colours.tolist()):
        def total(c, image=image):
            return float(reference_image_nll(mm, c, image)[:-1].sum())

        diff = reference_image_nll(mm, None, image)[:-1] - reference_image_nll(mm, caption, image)[:-1]
        diffs.append(diff)
        info.append(float(diff.sum()))
        variants = caption_variants(caption, label, colour)
        true = total(caption)
        colour_ok.append(all(true < total(variants[(label, c)]) for c in range(10) if c != colour))
        class_ok.append(all(true < total(variants[(k, colour)]) for k in range(10) if k != label))
    # differences of two float32 sums of 64 NLLs of ~9 nats each: absolute noise ~1e-4 of ~600
    torch.testing.assert_close(got.information, torch.tensor(info), rtol=0, atol=2e-3)
    torch.testing.assert_close(got.per_position, torch.stack(diffs).mean(dim=0), rtol=1e-4, atol=1e-4)
    assert got.colour_correct.tolist() == colour_ok and got.class_correct.tolist() == class_ok
    metrics = got.metrics()
    assert metrics["caption_info"] == pytest.approx(sum(info) / 4, abs=2e-3)
    assert metrics["gen_cls_colour"] == sum(colour_ok) / 4 and metrics["gen_cls_class"] == sum(class_ok) / 4


def test_a_caption_blind_model_scores_zero(trained, mini_slice, monkeypatch):
    """Where every prompt gives the same NLL, the information is 0 and every ranking is a tie,
    which counts as a miss (0%, not the 10% of a lucky argmin)."""
    mm = SemHiTokMLLM.from_pretrained(trained).eval()
    test = load_split(mini_slice, "test", limit=3)
    ids = mm.tokenizer.encode(test.float_images()).ids

    def blind(mm, captions, image_ids, batch_size=32, progress=False):
        return torch.ones(len(captions), image_ids.reshape(len(image_ids), -1).shape[1] + 1)

    monkeypatch.setattr(caption_following, "image_token_nll", blind)
    got = evaluate_caption_following(mm, ids, test.labels, test.colours, test.captions)
    assert got.information.tolist() == [0.0, 0.0, 0.0]
    assert got.colour_accuracy == 0.0 and got.class_accuracy == 0.0


def test_mismatched_inputs_are_refused(trained, mini_slice):
    mm = SemHiTokMLLM.from_pretrained(trained).eval()
    test = load_split(mini_slice, "test", limit=2)
    ids = mm.tokenizer.encode(test.float_images()).ids
    with pytest.raises(ValueError, match="as many"):
        evaluate_caption_following(mm, ids, test.labels[:1], test.colours, test.captions)
    with pytest.raises(ValueError, match="one caption per image"):
        image_token_nll(mm, ["a red coat"], ids)
