"""SemHiTok end to end: encode/decode contract, gradients, persistence, input checks."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from semhitok import SemHiTok, SemHiTokConfig, flatten_ids
from semhitok.modeling import ModelFolderError, fit_to_size


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    model = SemHiTok(SemHiTokConfig.from_preset("tiny"))
    model.train()
    model(torch.rand(32, 3, 64, 64))  # one training forward: k-means on 512 tokens initialises the K=256 codebook
    return model.eval()


def test_encode_decode_shapes_and_flattening(tok):
    images = torch.rand(3, 3, 64, 64)
    enc = tok.encode(images)
    g = tok.grid_size
    for t in (enc.semantic_ids, enc.pixel_ids, enc.ids):
        assert t.shape == (3, g, g) and t.dtype == torch.long
    assert int(enc.semantic_ids.max()) < tok.codebook_size and int(enc.pixel_ids.max()) < tok.subcodebook_size
    assert torch.equal(enc.ids, enc.semantic_ids * tok.subcodebook_size + enc.pixel_ids)
    out = tok.decode(enc.ids)
    assert out.shape == (3, 3, tok.image_size, tok.image_size)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    torch.testing.assert_close(tok.decode(enc.ids.flatten(1)), out)  # (B, h*w) ids work too


def test_encode_matches_the_hierarchy(tok):
    """Semantic ids are the EMA VQ's nearest codes; pixel ids the nearest inside that sub-codebook.

    References are float64 brute force. The tiny random teacher maps noise images to nearly equal
    features, so codes can sit within float32 rounding of each other: a differing id must then be a
    tie at float32 precision (its distance within 1e-6 of the best), and such ties must be rare.
    """
    images = torch.rand(4, 3, 64, 64)
    enc = tok.encode(images)
    k = enc.semantic_ids.flatten()
    j = enc.pixel_ids.flatten()
    with torch.no_grad():
        z = tok.semantic_head(tok.teacher(images)).flatten(0, 1).double()
        dist = torch.cdist(z, tok.semantic_quantizer.codebook.double()).pow(2)
        p = torch.nn.functional.normalize(tok.pixel_encoder(images * 2 - 1).flatten(0, 1).double(), dim=-1)
        sims = torch.einsum("nmd,nd->nm", tok.pixel_quantizer.codebook.double()[k], p)
    k_gap = dist.gather(1, k[:, None]).squeeze(1) - dist.min(dim=1).values
    j_gap = sims.max(dim=1).values - sims.gather(1, j[:, None]).squeeze(1)
    assert float(k_gap.max()) <= 1e-6 and float(j_gap.max()) <= 1e-6
    # Compare the chosen code vectors: duplicate codes (k-means seeds repeat samples) are exact ties.
    codebook = tok.semantic_quantizer.codebook
    assert int((codebook[k] != codebook[dist.argmin(dim=1)]).any(dim=1).sum()) <= k.numel() // 4
    assert int((j != sims.argmax(dim=1)).sum()) <= j.numel() // 4


def test_decode_is_the_decoder_on_concatenated_codes(tok):
    """decode(ids) == D_p([c_s[k]; l2(C_p[k, j])]) mapped to [0, 1]."""
    ids = torch.randint(0, tok.vocab_size, (2, tok.grid_size, tok.grid_size))
    k, j = ids.flatten(1) // tok.subcodebook_size, ids.flatten(1) % tok.subcodebook_size
    z_q = tok.semantic_quantizer.codebook[k]
    p_q = torch.nn.functional.normalize(tok.pixel_quantizer.weight[k, j], dim=-1)
    with torch.no_grad():
        expected = ((tok.pixel_decoder(torch.cat([z_q, p_q], -1)) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(tok.decode(ids), expected)


def test_encode_never_updates_codebooks():
    torch.manual_seed(0)
    model = SemHiTok(SemHiTokConfig.from_preset("tiny")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.encode(torch.rand(2, 3, 64, 64))
    assert model.training  # the caller's mode is restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_stage2_gradients_reach_pixel_branch_only_through_straight_through():
    torch.manual_seed(0)
    model = SemHiTok(SemHiTokConfig.from_preset("tiny")).train()
    out = model(torch.rand(2, 3, 64, 64))
    loss = (out.reconstruction - 0.5).pow(2).mean() + out.pixel.loss + out.semantic.loss
    loss.backward()
    assert model.pixel_encoder.patch_embed.weight.grad.abs().sum() > 0  # through the straight-through path
    assert model.pixel_decoder.proj_out.weight.grad.abs().sum() > 0
    assert model.pixel_quantizer.weight.grad.abs().sum() > 0
    assert model.semantic_head.fc1.weight.grad.abs().sum() > 0  # z_q feeds the decoder straight-through
    assert all(p.grad is None for p in model.teacher.parameters())
    assert not model.semantic_quantizer.codebook.requires_grad
    assert "semantic_quantizer.embed" not in dict(model.named_parameters())


def test_save_load_is_bit_exact(tok, tmp_path):
    tok.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = SemHiTok.from_pretrained(tmp_path / "m")
    a, b = tok.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    images = torch.rand(2, 3, 64, 64)
    e1, e2 = tok.encode(images), loaded.encode(images)
    assert torch.equal(e1.ids, e2.ids)
    assert torch.equal(tok.decode(e1.ids), loaded.decode(e2.ids))
    assert tok.fingerprint() == loaded.fingerprint()


def test_fingerprint_follows_the_codebooks(tok):
    other = SemHiTok(SemHiTokConfig.from_preset("tiny"))
    other.load_state_dict(tok.state_dict())
    assert other.fingerprint() == tok.fingerprint()
    with torch.no_grad():
        other.pixel_decoder.proj_out.bias.add_(1.0)  # a new decoder keeps the tokens meaningful
    assert other.fingerprint() == tok.fingerprint()
    with torch.no_grad():
        other.pixel_quantizer.weight[0, 0, 0] += 1.0
    assert other.fingerprint() != tok.fingerprint()


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        SemHiTok.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="no config.json"):
        SemHiTok.from_pretrained(tmp_path / "empty")


def test_save_pretrained_replaces_a_folder_whole_and_leaves_no_temporaries(tok, tmp_path):
    """Saving over an existing model folder replaces both files and keeps the user's other files;
    no temporary name is left behind."""
    other = SemHiTok(SemHiTokConfig.from_preset("tiny"))
    other.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "notes.txt").write_text("mine")
    tok.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
    assert SemHiTok.from_pretrained(tmp_path / "m").fingerprint() == tok.fingerprint() != other.fingerprint()


def test_nonfinite_weights_are_refused_at_load(tok, tmp_path):
    """A diverged model's NaN weights would encode to meaningless ids: refused at load, by name."""
    tok.save_pretrained(tmp_path / "m")
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    key = sorted(k for k, v in state.items() if v.is_floating_point() and k.startswith("pixel_decoder."))[0]
    state[key] = state[key].clone()
    state[key].view(-1)[-1] = float("nan")
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ModelFolderError, match=rf"NaN or Inf \({key}"):
        SemHiTok.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize(
    "images, error, message",
    [
        ([[0.0]], TypeError, "torch.Tensor"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, "divide uint8"),
        (torch.rand(3, 64, 64), ValueError, r"\(B, 3, H, W\)"),
        (torch.rand(1, 4, 64, 64), ValueError, "3 \\(RGB\\) channels"),
        (torch.rand(1, 3, 64, 64) * 255, ValueError, r"\[0, 1\]"),
        (torch.full((1, 3, 64, 64), float("nan")), ValueError, "NaN"),
    ],
)
def test_encode_rejects_bad_images(tok, images, error, message):
    with pytest.raises(error, match=message):
        tok.encode(images)


@pytest.mark.parametrize(
    "ids, error, message",
    [
        (torch.zeros(1, 4, 4), TypeError, "integer"),
        (torch.zeros(1, 5, 5, dtype=torch.long), ValueError, "shape"),
        (torch.full((1, 4, 4), 10**6, dtype=torch.long), ValueError, r"\[0, 1024\)"),
        (torch.full((1, 16), -1, dtype=torch.long), ValueError, r"\[0, 1024\)"),
    ],
)
def test_decode_rejects_bad_ids(tok, ids, error, message):
    with pytest.raises(error, match=message):
        tok.decode(ids)


def test_resize_policies(tok):
    wide = torch.rand(1, 3, 64, 128)
    assert tok.encode(wide).ids.shape == (1, 4, 4)  # default: crop
    assert tok.encode(wide, resize="stretch").ids.shape == (1, 4, 4)
    with pytest.raises(ValueError, match="64x128 but the model takes 64x64"):
        tok.encode(wide, resize="error")
    # crop keeps the centre square: a wide image whose centre is the reference crops to it exactly
    centre = torch.rand(1, 3, 64, 64)
    padded = torch.cat([torch.zeros(1, 3, 64, 32), centre, torch.zeros(1, 3, 64, 32)], dim=-1)
    torch.testing.assert_close(fit_to_size(padded, 64, "crop"), centre)


def test_ablation_without_semantic_tokens():
    """decoder_uses_semantic=False decodes from p_q alone (Tab. 9 ablation)."""
    model = SemHiTok(SemHiTokConfig.from_preset("tiny", decoder_uses_semantic=False))
    assert model.pixel_decoder.proj_in.in_features == model.config.pixel_dim
    assert model.decode(torch.zeros(1, 4, 4, dtype=torch.long)).shape == (1, 3, 64, 64)


def test_length_concat_decoder_reads_both_token_kinds(tmp_path):
    """decoder_concat=length: 2L tokens in the trunk, the image from the pixel half; z_q matters."""
    torch.manual_seed(0)
    model = SemHiTok(SemHiTokConfig.from_preset("tiny", decoder_concat="length")).eval()
    dec = model.pixel_decoder
    assert dec.proj_in.in_features == model.config.pixel_dim and dec.proj_in_prefix.in_features == model.config.semantic_dim
    assert dec.trunk.pos_embed.shape[1] == 2 * model.config.num_tokens
    ids = torch.randint(model.vocab_size, (2, 4, 4))
    images = model.decode(ids)
    assert images.shape == (2, 3, 64, 64)
    other_semantic = ids.clone()
    other_semantic[0, 0, 0] = (ids[0, 0, 0] + model.subcodebook_size) % model.vocab_size  # same pixel code, other parent
    assert not torch.equal(model.decode(other_semantic)[0], images[0])
    model.save_pretrained(tmp_path / "m")
    assert torch.equal(SemHiTok.from_pretrained(tmp_path / "m").decode(ids), images)
    with pytest.raises(ValueError, match="needs a prefix"):
        dec(torch.zeros(1, 16, model.config.pixel_dim))


@pytest.mark.parametrize("kind", ["vanilla", "norm"])
def test_gradient_semantic_quantizers_train_in_stage_one(kind):
    """semantic_quantizer=vanilla|norm: a stage-1 loss step moves the codebook (EMA VQ's does not get a gradient)."""
    from semhitok.quantizers import VectorQuantizer

    torch.manual_seed(0)
    model = SemHiTok(SemHiTokConfig.from_preset("tiny", semantic_quantizer=kind, kmeans_init=False))
    q = model.semantic_quantizer
    assert isinstance(q, VectorQuantizer) and q.normalize == (kind == "norm")
    out = model.semantic_forward(torch.rand(2, 3, 64, 64))
    (out.quantizer.loss + out.reconstruction.square().mean()).backward()
    assert q.weight.grad is not None and q.weight.grad.abs().sum() > 0
    enc = model.eval().encode(torch.rand(1, 3, 64, 64))
    if kind == "norm":
        assert torch.allclose(q.lookup(enc.semantic_ids).norm(dim=-1), torch.ones(1, 4, 4))


def test_flatten_ids_is_the_public_contract(tok):
    enc = tok.encode(torch.rand(1, 3, 64, 64))
    assert torch.equal(flatten_ids(enc.semantic_ids, enc.pixel_ids, tok.subcodebook_size), enc.ids)


def test_from_pretrained_detects_mixed_folders(tok, tmp_path):
    """Weights from one model beside the config.json of another are refused, not silently used."""
    tok.save_pretrained(tmp_path / "a")
    other = SemHiTok(SemHiTokConfig.from_preset("tiny"))
    other.save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(ModelFolderError, match="mixes files of different models"):
        SemHiTok.from_pretrained(tmp_path / "a")


def test_frozen_modules_stay_frozen_through_train():
    """freeze(): no grad, eval mode even after model.train(), so the EMA codebook stops moving."""
    torch.manual_seed(0)
    model = SemHiTok(SemHiTokConfig.from_preset("tiny"))
    model.freeze(["semantic_head", "semantic_quantizer", "semantic_decoder"])
    model.train()
    assert model.pixel_encoder.training and not model.semantic_quantizer.training
    assert not any(p.requires_grad for p in model.semantic_head.parameters())
    before = model.semantic_quantizer.codebook.clone()
    model(torch.rand(4, 3, 64, 64))
    assert torch.equal(model.semantic_quantizer.codebook, before)
    assert model.frozen_modules == {"teacher", "semantic_head", "semantic_quantizer", "semantic_decoder"}
    with pytest.raises(ValueError, match="unknown module"):
        model.freeze(["encoder"])
