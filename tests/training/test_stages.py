"""Frozen means frozen: each stage changes exactly the modules it trains."""

import math

import pytest
import torch

from semhitok import SemHiTok, SemHiTokConfig
from semhitok.training import TRAINED_MODULES, prepare_stage, warmup_cosine


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


def test_warmup_cosine_by_hand():
    kw = dict(base_lr=1.0, warmup_steps=4, total_steps=14, min_lr=0.1)
    assert [warmup_cosine(s, **kw) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, **kw) == pytest.approx(1.0)
    assert warmup_cosine(9, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(14, **kw) == pytest.approx(0.1)
    assert warmup_cosine(100, **kw) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        warmup_cosine(0, base_lr=1.0, warmup_steps=0, total_steps=0)
