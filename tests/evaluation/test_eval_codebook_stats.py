"""Codebook usage statistics against hand computations, merging, and ids from the tiny tokenizer."""

import math

import pytest
import torch

from semhitok import SemHiTok, SemHiTokConfig
from semhitok.evaluation.codebook_stats import CodebookUsage, histogram_perplexity


def _hand_example() -> CodebookUsage:
    """K=4, m=3. Pairs (k, j): (0,0) x2, (0,1), (0,2), (1,2) x3, (2,0); code 3 never used."""
    usage = CodebookUsage(4, 3)
    usage.update(torch.tensor([[0, 0, 0, 1]]), torch.tensor([[0, 1, 0, 2]]))
    usage.update(torch.tensor([1, 2, 0, 1]), torch.tensor([2, 0, 2, 2]))
    return usage


def test_statistics_of_a_hand_computed_example():
    usage = _hand_example()
    assert usage.semantic_counts.tolist() == [4, 3, 1, 0]
    assert usage.pair_counts.tolist() == [[2, 1, 1], [0, 0, 3], [1, 0, 0], [0, 0, 0]]
    s = usage.compute(top_n=2)
    assert s["num_tokens"] == 8
    assert s["semantic_used"] == 3 and s["semantic_usage"] == 0.75 and s["dead_semantic_codes"] == 1
    p = [0.5, 0.375, 0.125]
    assert s["semantic_perplexity"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))
    flat = [2 / 8, 1 / 8, 1 / 8, 3 / 8, 1 / 8]
    assert s["flat_perplexity"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in flat)))
    assert s["flat_used"] == 5 and s["flat_usage"] == pytest.approx(5 / 12)
    assert s["subcodebook_usage"] == pytest.approx((3 / 3 + 1 / 3 + 1 / 3) / 3)
    assert s["subcode_histogram"] == [0, 2, 0, 1]
    assert s["dead_subcodes"] == 4  # code 0: none, code 1: two, code 2: two; code 3 is not counted
    assert s["top_semantic_codes"] == [[0, 4], [1, 3]]
    assert usage.compute(top_n=10)["top_semantic_codes"] == [[0, 4], [1, 3], [2, 1]]  # unused code 3 left out


def test_perplexity_extremes():
    assert histogram_perplexity(torch.full((7,), 5)) == pytest.approx(7.0)
    assert histogram_perplexity(torch.tensor([0, 9, 0, 0])) == pytest.approx(1.0)
    assert histogram_perplexity(torch.zeros(3)) == 0.0

    uniform = CodebookUsage(5, 2)
    k = torch.arange(5).repeat_interleave(2)
    uniform.update(k, torch.arange(10) % 2)
    s = uniform.compute()
    assert s["semantic_perplexity"] == pytest.approx(5.0) and s["flat_perplexity"] == pytest.approx(10.0)
    assert s["semantic_usage"] == 1.0 and s["subcodebook_usage"] == 1.0 and s["dead_subcodes"] == 0
    assert s["subcode_histogram"] == [0, 0, 5]

    single = CodebookUsage(5, 2)
    single.update(torch.full((3, 4), 2), torch.ones(3, 4, dtype=torch.long))
    s = single.compute()
    assert s["semantic_perplexity"] == pytest.approx(1.0) and s["flat_perplexity"] == pytest.approx(1.0)
    assert s["semantic_usage"] == 0.2 and s["dead_semantic_codes"] == 4 and s["subcodebook_usage"] == 0.5
    assert s["dead_subcodes"] == 1 and s["top_semantic_codes"] == [[2, 12]]


def test_empty_accumulator():
    s = CodebookUsage(3, 2).compute()
    assert s["num_tokens"] == 0 and s["semantic_perplexity"] == 0.0 and s["subcodebook_usage"] == 0.0
    assert s["subcode_histogram"] == [0, 0, 0] and s["top_semantic_codes"] == [] and s["dead_semantic_codes"] == 3


def test_merge_equals_accumulating_everything_in_one():
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randint(0, 16, (2, 4, 4), generator=g), torch.randint(0, 5, (2, 4, 4), generator=g)) for _ in range(4)
    ]
    whole, left, right = CodebookUsage(16, 5), CodebookUsage(16, 5), CodebookUsage(16, 5)
    for i, (k, j) in enumerate(batches):
        whole.update(k, j)
        (left if i % 2 else right).update(k, j)
    assert left.merge(right) is left
    assert torch.equal(left.pair_counts, whole.pair_counts)
    assert left.compute() == whole.compute()
    assert whole.all_reduce() is whole  # no process group: unchanged
    with pytest.raises(ValueError):
        whole.merge(CodebookUsage(16, 4))


def test_bad_ids_are_rejected():
    usage = CodebookUsage(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        usage.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="semantic ids"):
        usage.update(torch.tensor([4]), torch.tensor([0]))
    with pytest.raises(ValueError, match="pixel ids"):
        usage.update(torch.tensor([0]), torch.tensor([-1]))
    with pytest.raises(TypeError):
        usage.update(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError):
        CodebookUsage(0, 3)
    assert usage.num_tokens == 0


def test_counts_ids_from_the_tiny_tokenizer():
    torch.manual_seed(0)
    tok = SemHiTok(SemHiTokConfig.from_preset("tiny")).eval()
    enc = tok.encode(torch.rand(3, 3, tok.image_size, tok.image_size))
    usage = CodebookUsage.for_tokenizer(tok)
    usage.update(enc.semantic_ids, enc.pixel_ids)
    s = usage.compute()
    g = tok.grid_size
    assert s["num_tokens"] == 3 * g * g
    assert usage.pair_counts.shape == (tok.codebook_size, tok.subcodebook_size)
    flat_counts = torch.bincount(enc.ids.flatten(), minlength=tok.vocab_size)
    assert torch.equal(usage.pair_counts.flatten(), flat_counts)
    assert torch.equal(usage.semantic_counts, torch.bincount(enc.semantic_ids.flatten(), minlength=tok.codebook_size))
    assert s["semantic_used"] == len(set(enc.semantic_ids.flatten().tolist()))
    assert sum(s["subcode_histogram"]) == s["semantic_used"]
    assert 1.0 <= s["semantic_perplexity"] <= s["semantic_used"]


def test_all_reduce_in_a_one_rank_process_group(tmp_path):
    import torch.distributed as dist

    usage = _hand_example()
    before = usage.pair_counts.clone()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        assert usage.all_reduce() is usage
    finally:
        dist.destroy_process_group()
    assert torch.equal(usage.pair_counts, before) and usage.pair_counts.device.type == "cpu"
