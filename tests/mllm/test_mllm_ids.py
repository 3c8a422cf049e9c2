"""The joint id space: text ids, then K*m image ids (V + k*m + j), then <boi>, <eoi>, <uncond>."""

from __future__ import annotations

import pytest
import torch

from semhitok import flatten_ids
from semhitok.mllm import SPECIAL_NAMES, ImageIdSpace


def test_layout_follows_the_head_rows_not_the_tokenizer():
    ids = ImageIdSpace(text_vocab=288, codebook_size=256, subcodebook_size=4)
    assert (ids.image_start, ids.image_end, ids.num_image) == (288, 288 + 1024, 1024)
    assert (ids.boi, ids.eoi, ids.uncond) == (1312, 1313, 1314)
    assert [ids.special_id(n) for n in SPECIAL_NAMES] == [ids.boi, ids.eoi, ids.uncond]
    assert ids.total == 288 + 1024 + 3 and ids.head_size == 1027
    with pytest.raises(ValueError, match="unknown special token"):
        ids.special_id("<image>")


def test_round_trips_through_tokenizer_ids_and_code_pairs():
    ids = ImageIdSpace(100, 7, 3)
    k, j = torch.meshgrid(torch.arange(7), torch.arange(3), indexing="ij")
    joint = ids.from_codes(k, j)
    assert torch.equal(joint, 100 + flatten_ids(k, j, 3))  # the paper's flat id k*m + j, shifted by V
    assert torch.equal(joint.flatten(), torch.arange(100, 121))  # every image id exactly once
    k2, j2 = ids.to_codes(joint)
    assert torch.equal(k2, k) and torch.equal(j2, j)
    flat = torch.randint(0, 21, (4, 5))
    assert torch.equal(ids.to_tokenizer(ids.from_tokenizer(flat)), flat)


def test_masks_partition_the_vocabulary():
    ids = ImageIdSpace(10, 2, 2)
    every = torch.arange(ids.total)
    text, image, special = ids.is_text(every), ids.is_image(every), ids.is_special(every)
    assert text.sum() == 10 and image.sum() == 4 and special.sum() == 3
    assert torch.equal(text.int() + image.int() + special.int(), torch.ones(ids.total, dtype=torch.int))
    assert not (ids.is_text(torch.tensor([-1, ids.total])) | ids.is_special(torch.tensor([-1, ids.total]))).any()


def test_out_of_range_ids_are_refused_with_one_line():
    ids = ImageIdSpace(10, 2, 2)
    with pytest.raises(ValueError, match=r"tokenizer ids must lie in \[0, 4\), got \[0, 4\]"):
        ids.from_tokenizer(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"image ids must lie in \[10, 14\)"):
        ids.to_tokenizer(torch.tensor([9]))  # a text id is not an image id
    with pytest.raises(ValueError, match="pixel ids"):
        ids.from_codes(torch.tensor([0]), torch.tensor([2]))
    with pytest.raises(TypeError, match="integer tensor"):
        ids.check(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="text_vocab must be a positive integer"):
        ImageIdSpace(0, 2, 2)
