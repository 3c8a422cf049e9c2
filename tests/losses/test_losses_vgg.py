"""VGG16 in plain torch: torchvision key layout, taps, weight files (.pth and .safetensors), refused files."""

import pytest
import torch
from safetensors.torch import save_file

from semhitok.losses import VGG16_CONV_INDICES, PerceptualLoss, VGG16Features
from semhitok.weights_file import WeightsFileError

# torchvision vgg16().features: (index, out, in) of the 13 3x3 convs.
EXPECTED_CONVS = [
    (0, 64, 3), (2, 64, 64),
    (5, 128, 64), (7, 128, 128),
    (10, 256, 128), (12, 256, 256), (14, 256, 256),
    (17, 512, 256), (19, 512, 512), (21, 512, 512),
    (24, 512, 512), (26, 512, 512), (28, 512, 512),
]  # fmt: skip


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGG16Features()


def test_torchvision_key_layout(vgg):
    state = vgg.state_dict()
    expected = {}
    for index, out_c, in_c in EXPECTED_CONVS:
        expected[f"features.{index}.weight"] = (out_c, in_c, 3, 3)
        expected[f"features.{index}.bias"] = (out_c,)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert tuple(i for i, _, _ in EXPECTED_CONVS) == VGG16_CONV_INDICES


def test_taps_shapes(vgg):
    feats = vgg(torch.randn(1, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [
        (1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8), (1, 512, 4, 4), (1, 512, 2, 2),
    ]  # fmt: skip
    assert all((f >= 0).all() for f in feats)  # ReLU outputs


def test_state_dict_round_trips_pth_and_safetensors(vgg, tmp_path):
    state = {k: v.clone() for k, v in vgg.state_dict().items()}
    # torchvision's full file also holds the classifier: accepted and ignored.
    pth_state = dict(state, **{"classifier.0.weight": torch.zeros(2, 2)})
    torch.save(pth_state, tmp_path / "vgg16-397923af.pth")
    save_file(state, str(tmp_path / "vgg16.safetensors"))
    x = torch.randn(1, 3, 16, 16)
    ref = vgg(x)
    for name in ("vgg16-397923af.pth", "vgg16.safetensors"):
        other = VGG16Features(tmp_path / name)
        assert other.pretrained
        for k, v in other.state_dict().items():
            assert torch.equal(v, state[k]), (name, k)
        for a, b in zip(other(x), ref):
            assert torch.equal(a, b)


def test_bad_files_give_clear_errors(vgg, tmp_path):
    state = vgg.state_dict()
    missing = {k: v for k, v in state.items() if k != "features.28.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing keys \['features.28.bias'\]"):
        VGG16Features(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"unknown keys \['net.foo'\]"):
        vgg.load_weights(dict(state, **{"net.foo": torch.zeros(1)}))
    with pytest.raises(ValueError, match="features.0.bias has shape"):
        vgg.load_weights(dict(state, **{"features.0.bias": torch.zeros(3)}))
    with pytest.raises(WeightsFileError, match="absent.pth: no such file"):
        VGG16Features(tmp_path / "absent.pth")


class _Payload:
    """Unpickling this runs code: what a malicious .pth would carry."""

    def __reduce__(self):
        return (print, ("PAYLOAD RAN",))


@pytest.mark.parametrize("via", ["VGG16Features", "PerceptualLoss", "LossConfig.vgg_weights"])
def test_pickle_payload_is_refused_not_run(tmp_path, capsys, via):
    evil = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.zeros(1), "x": _Payload()}, evil)
    with pytest.raises(WeightsFileError, match="not a weights-only checkpoint; refusing to unpickle") as info:
        if via == "VGG16Features":
            VGG16Features(evil)
        elif via == "PerceptualLoss":
            PerceptualLoss(vgg_weights=evil)
        else:
            from semhitok.losses import LossConfig, PixelReconstructionLoss

            PixelReconstructionLoss(LossConfig(perceptual_weight=1.0, vgg_weights=str(evil)))
    assert "\n" not in str(info.value) and str(evil) in str(info.value)
    assert "PAYLOAD RAN" not in capsys.readouterr().out


def test_nonfinite_vgg_weights_are_refused(vgg, tmp_path):
    state = vgg.state_dict()
    state["features.2.weight"] = state["features.2.weight"].clone()
    state["features.2.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(WeightsFileError, match=r"NaN or Inf values \(in features.2.weight\)"):
        VGG16Features(tmp_path / "nan.safetensors")
