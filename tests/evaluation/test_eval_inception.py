"""The torchvision-free FID InceptionV3: weight layout, loader and forward contract."""

import pytest
import torch

from semhitok.evaluation.inception import FIDInceptionV3, load_fid_inception_weights
from semhitok.weights_file import WeightsFileError

# torchvision's inception_v3 has 27,161,264 parameters (aux_logits=True, 1000 classes);
# minus AuxLogits (3,326,696) and fc (2,049,000) leaves the FID feature network:
EXPECTED_PARAMS = 21_785_568


def _conv(key, cin, cout, kh, kw):
    """Expected state-dict entries of one BasicConv2d (conv without bias + BatchNorm)."""
    out = {f"{key}.conv.weight": (cout, cin, kh, kw)}
    for b in ("weight", "bias", "running_mean", "running_var"):
        out[f"{key}.bn.{b}"] = (cout,)
    out[f"{key}.bn.num_batches_tracked"] = ()
    return out


def _expected_layout():
    """pt_inception-2015-12-05 key -> shape, written from the Inception-v3 architecture table."""
    e = {}
    for k, cin, cout, kh, kw in [
        ("Conv2d_1a_3x3", 3, 32, 3, 3),
        ("Conv2d_2a_3x3", 32, 32, 3, 3),
        ("Conv2d_2b_3x3", 32, 64, 3, 3),
        ("Conv2d_3b_1x1", 64, 80, 1, 1),
        ("Conv2d_4a_3x3", 80, 192, 3, 3),
    ]:
        e |= _conv(k, cin, cout, kh, kw)
    for name, cin, pool in [("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)]:
        for k, i, o, kh, kw in [
            ("branch1x1", cin, 64, 1, 1),
            ("branch5x5_1", cin, 48, 1, 1),
            ("branch5x5_2", 48, 64, 5, 5),
            ("branch3x3dbl_1", cin, 64, 1, 1),
            ("branch3x3dbl_2", 64, 96, 3, 3),
            ("branch3x3dbl_3", 96, 96, 3, 3),
            ("branch_pool", cin, pool, 1, 1),
        ]:
            e |= _conv(f"{name}.{k}", i, o, kh, kw)
    for k, i, o, kh, kw in [
        ("branch3x3", 288, 384, 3, 3),
        ("branch3x3dbl_1", 288, 64, 1, 1),
        ("branch3x3dbl_2", 64, 96, 3, 3),
        ("branch3x3dbl_3", 96, 96, 3, 3),
    ]:
        e |= _conv(f"Mixed_6a.{k}", i, o, kh, kw)
    for name, c7 in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
        for k, i, o, kh, kw in [
            ("branch1x1", 768, 192, 1, 1),
            ("branch7x7_1", 768, c7, 1, 1),
            ("branch7x7_2", c7, c7, 1, 7),
            ("branch7x7_3", c7, 192, 7, 1),
            ("branch7x7dbl_1", 768, c7, 1, 1),
            ("branch7x7dbl_2", c7, c7, 7, 1),
            ("branch7x7dbl_3", c7, c7, 1, 7),
            ("branch7x7dbl_4", c7, c7, 7, 1),
            ("branch7x7dbl_5", c7, 192, 1, 7),
            ("branch_pool", 768, 192, 1, 1),
        ]:
            e |= _conv(f"{name}.{k}", i, o, kh, kw)
    for k, i, o, kh, kw in [
        ("branch3x3_1", 768, 192, 1, 1),
        ("branch3x3_2", 192, 320, 3, 3),
        ("branch7x7x3_1", 768, 192, 1, 1),
        ("branch7x7x3_2", 192, 192, 1, 7),
        ("branch7x7x3_3", 192, 192, 7, 1),
        ("branch7x7x3_4", 192, 192, 3, 3),
    ]:
        e |= _conv(f"Mixed_7a.{k}", i, o, kh, kw)
    for name, cin in [("Mixed_7b", 1280), ("Mixed_7c", 2048)]:
        for k, i, o, kh, kw in [
            ("branch1x1", cin, 320, 1, 1),
            ("branch3x3_1", cin, 384, 1, 1),
            ("branch3x3_2a", 384, 384, 1, 3),
            ("branch3x3_2b", 384, 384, 3, 1),
            ("branch3x3dbl_1", cin, 448, 1, 1),
            ("branch3x3dbl_2", 448, 384, 3, 3),
            ("branch3x3dbl_3a", 384, 384, 1, 3),
            ("branch3x3dbl_3b", 384, 384, 3, 1),
            ("branch_pool", cin, 192, 1, 1),
        ]:
            e |= _conv(f"{name}.{k}", i, o, kh, kw)
    return e


@pytest.fixture(scope="module")
def model():
    return FIDInceptionV3()


def test_state_dict_layout_matches_pt_inception(model):
    sd = model.state_dict()
    expected = _expected_layout()
    assert set(sd) == set(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    # A few keys spelled out literally, as they appear in pt_inception-2015-12-05-6726825d.pth.
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Conv2d_1a_3x3.bn.running_mean"].shape == (32,)
    assert sd["Mixed_5b.branch1x1.conv.weight"].shape == (64, 192, 1, 1)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS
    assert model.Conv2d_1a_3x3.bn.eps == pytest.approx(1e-3)


def _random_weight_file_dict(model):
    """A state dict like the real file: random values, fc 1008-way classifier, no BN counters."""
    g = torch.Generator().manual_seed(1)
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        sd[k] = torch.rand(v.shape, generator=g) + 0.5 if k.endswith("running_var") else torch.randn(v.shape, generator=g)
    sd["fc.weight"] = torch.randn(1008, 2048, generator=g)
    sd["fc.bias"] = torch.randn(1008, generator=g)
    return sd


def test_loader_round_trips_pth_and_safetensors(model, tmp_path):
    from safetensors.torch import save_file

    sd = _random_weight_file_dict(model)
    torch.save(sd, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    save_file(sd, str(tmp_path / "inception.safetensors"))
    for name in ("pt_inception-2015-12-05-6726825d.pth", "inception.safetensors"):
        loaded = load_fid_inception_weights(tmp_path / name)
        assert not loaded.training
        got = loaded.state_dict()
        for k, v in sd.items():
            if not k.startswith("fc."):
                assert torch.equal(got[k], v), k


def test_loader_names_bad_keys_and_shapes(model, tmp_path, monkeypatch):
    import semhitok.evaluation.inception as inception

    sd = _random_weight_file_dict(model)
    # File reading is covered by the round-trip test; feed bad dicts directly to keep this fast.
    served = {}
    monkeypatch.setattr(inception, "_read_state_dict", lambda path: dict(served[str(path)]))
    bad = dict(sd)
    del bad["Mixed_5b.branch1x1.conv.weight"]
    bad["Mixed_5b.extra.weight"] = torch.zeros(1)
    served["bad.pth"] = bad
    with pytest.raises(ValueError, match=r"missing keys \(Mixed_5b\.branch1x1\.conv\.weight\).*unexpected keys"):
        load_fid_inception_weights("bad.pth")
    served["wrong.pth"] = {**sd, "Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)}
    with pytest.raises(ValueError, match=r"Conv2d_1a_3x3\.conv\.weight \(32, 3, 5, 5\)"):
        load_fid_inception_weights("wrong.pth")
    served["fc.pth"] = {**sd, "fc.weight": torch.zeros(1000, 2048)}
    with pytest.raises(ValueError, match="fc.weight"):
        load_fid_inception_weights("fc.pth")
    monkeypatch.undo()
    with pytest.raises(WeightsFileError, match="nope.pth: no such file"):
        load_fid_inception_weights(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsFileError, match="neither a .safetensors file nor a torch weights file"):
        load_fid_inception_weights(tmp_path / "junk.pth")


class _Payload:
    def __reduce__(self):
        return (print, ("PAYLOAD RAN",))


def test_pickle_payload_is_refused_not_run(tmp_path, capsys):
    evil = tmp_path / "pt_inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": _Payload()}, evil)
    with pytest.raises(WeightsFileError, match="FID Inception weights file .* is not a weights-only checkpoint; refusing to unpickle"):
        load_fid_inception_weights(evil)
    assert "PAYLOAD RAN" not in capsys.readouterr().out


def test_forward_gives_nonnegative_pool3_features_in_eval_mode(model):
    model.train()  # must be a no-op
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    images = torch.rand(2, 3, 64, 48, requires_grad=True)
    feats = model(images)  # resized to 299x299 inside
    assert feats.shape == (2, 2048)
    assert feats.dtype == torch.float32 and not feats.requires_grad
    assert torch.isfinite(feats).all() and (feats >= 0).all() and (feats > 0).any()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(2, 1, 32, 32))


def test_preprocess_matches_pytorch_fid_convention(model):
    x = torch.rand(1, 3, 40, 30)
    y = model.preprocess(x)
    ref = 2 * torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(y, ref)
    u8 = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(model.preprocess(u8), model.preprocess(u8.float() / 255))
