"""Frozen means frozen: each stage changes exactly the modules it trains."""

import math

import pytest
import torch

from semhitok import SemHiTok, SemHiTokConfig
from semhitok.modeling.outputs import PixelForwardOutput, SemanticForwardOutput
from semhitok.training import TRAINED_MODULES, get_stage, prepare_stage, warmup_cosine


def _snapshot(model):
    """Parameters and buffers of every top-level module, cloned."""
    return {
        name: {k: v.detach().clone() for k, v in module.state_dict().items()}
        for name, module in model.named_children()
    }


def _changed(before, model):
    out = set()
    for name, module in model.named_children():
        now = module.state_dict()
        if any(not torch.equal(now[k], v) for k, v in before[name].items()):
            out.add(name)
    return out


def _run_steps(model, params, stage, steps=3):
    opt = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        images = torch.rand(4, 3, 64, 64)
        if stage == "semantic":
            out = model.semantic_forward(images)
            loss = (1 - torch.nn.functional.cosine_similarity(out.reconstruction, out.features, dim=-1)).mean() + out.quantizer.loss
        else:
            out = model(images)
            loss = (out.reconstruction - images).abs().mean() + out.pixel.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@pytest.fixture()
def stage1_model():
    torch.manual_seed(0)
    model = SemHiTok(SemHiTokConfig.from_preset("tiny"))
    model.train()
    model.semantic_forward(torch.rand(32, 3, 64, 64))  # k-means init of the codebook, as stage 1 would
    return model


@pytest.mark.parametrize("stage", ["semantic", "pixel", "decoder"])
def test_stage_changes_exactly_its_modules(stage, stage1_model):
    model = stage1_model
    params = prepare_stage(model, stage)
    before = _snapshot(model)
    _run_steps(model, params, stage)
    assert _changed(before, model) == set(TRAINED_MODULES[stage])
    assert {n for n, m in model.named_children() if any(p.requires_grad for p in m.parameters())} == (
        set(TRAINED_MODULES[stage]) - {"semantic_quantizer"}  # the EMA codebook has no parameters
    )


def test_unknown_stage():
    with pytest.raises(ValueError, match="unknown stage 'pixels'"):
        prepare_stage(SemHiTok(SemHiTokConfig.from_preset("tiny")), "pixels")


def test_stage_objects_say_what_they_train_and_run():
    """The paper's three stages: stage 1 distils (semantic forward, no GAN); stages 2 and 3
    reconstruct pixels with a discriminator; each freezes the rest, the teacher always."""
    model = SemHiTok(SemHiTokConfig.from_preset("tiny"))
    semantic, pixel, decoder = (get_stage(n) for n in ("semantic", "pixel", "decoder"))
    assert (semantic.pixel, semantic.has_discriminator) == (False, False)
    assert (pixel.pixel, pixel.has_discriminator) == (True, True) and decoder.trained == ("pixel_decoder",)
    assert set(decoder.frozen(model)) == {n for n, _ in model.named_children()} - {"pixel_decoder"}
    assert "teacher" in semantic.frozen(model) and get_stage(pixel) is pixel
    model.eval()
    images = torch.rand(2, 3, model.image_size, model.image_size)
    assert isinstance(semantic.forward(model, images), SemanticForwardOutput)
    assert isinstance(pixel.forward(model, images), PixelForwardOutput)


def test_last_decoder_layer_is_the_pixel_decoders_output_weight():
    model = SemHiTok(SemHiTokConfig.from_preset("tiny"))
    assert model.last_decoder_layer is model.pixel_decoder.proj_out.weight


def test_warmup_cosine_by_hand():
    kw = dict(base_lr=1.0, warmup_steps=4, total_steps=14, min_lr=0.1)
    assert [warmup_cosine(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, **kw) == pytest.approx(1.0)
    assert warmup_cosine(9, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(14, **kw) == pytest.approx(0.1)
    assert warmup_cosine(100, **kw) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        warmup_cosine(0, base_lr=1.0, warmup_steps=0, total_steps=0)
