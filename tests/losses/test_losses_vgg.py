"""VGG16 in plain torch: torchvision key layout, taps, weight files (.pth and .safetensors)."""

import pytest
import torch
from safetensors.torch import save_file

from semhitok.losses import VGG16_CONV_INDICES, VGG16Features

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
    with pytest.raises(FileNotFoundError):
        VGG16Features(tmp_path / "absent.pth")
