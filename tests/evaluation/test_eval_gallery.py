"""The code gallery: reservoir per code, patches are the assigned image regions, grids and maps."""

import pytest
import torch

from semhitok.evaluation.gallery import PatchGallery, code_colors, code_grid, code_map, subcode_grid


def _data(b=6, g=4, p=8, k=5, m=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, g * p, g * p, generator=gen)
    sem = torch.randint(0, k, (b, g, g), generator=gen)
    pix = torch.randint(0, m, (b, g, g), generator=gen)
    return images, sem, pix


def test_counts_reservoir_and_patch_regions():
    images, sem, pix = _data()
    gallery = PatchGallery(grid_size=4, patch_size=8, per_code=3)
    gallery.update(images[:3], sem[:3], pix[:3])
    gallery.update(images[3:], sem[3:], pix[3:])
    for code in range(5):
        assert gallery.count(code) == int((sem == code).sum())
        kept = gallery.patches(code)
        assert len(kept) == min(3, gallery.count(code))
    # Every kept patch is the 8x8 region of a token that really carries that code and sub-code.
    u8 = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    for code in range(5):
        r = gallery._reservoirs[code]
        for image, token, sub in r.items:
            row, col = divmod(token, 4)
            assert int(sem[image, row, col]) == code and int(pix[image, row, col]) == sub
            assert torch.equal(gallery.patch(image, token), u8[image, :, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8])
    counts = torch.bincount(sem.flatten(), minlength=5)
    assert gallery.most_used(2) == sorted(range(5), key=lambda c: (-int(counts[c]), c))[:2]


def test_reservoir_is_uniform_enough():
    """Each of 100 tokens of one code ends in a 10-slot reservoir with probability 1/10."""
    hits = torch.zeros(100)
    for seed in range(200):
        gallery = PatchGallery(grid_size=10, patch_size=1, per_code=10, seed=seed)
        gallery.update(torch.rand(1, 3, 10, 10), torch.zeros(1, 10, 10, dtype=torch.long), torch.zeros(1, 10, 10, dtype=torch.long))
        for _, token, _ in gallery._reservoirs[0].items:
            hits[token] += 1
    assert hits.sum() == 2000 and hits.mean() == 20
    assert float(hits.min()) >= 5 and float(hits.max()) <= 40  # binomial(200, 0.1): mean 20, sd 4.2


def test_grids_and_code_map():
    images, sem, pix = _data()
    gallery = PatchGallery(grid_size=4, patch_size=8, per_code=4)
    gallery.update(images, sem, pix)
    grid = code_grid(gallery, [0, 1], columns=4, scale=2, gap=2)
    assert grid.shape == (3, 2 * 18 + 2, 4 * 18 + 2) and grid.dtype == torch.uint8
    first = gallery.patches(0)[0][0]
    assert torch.equal(grid[:, 2:18, 2:18], first.repeat_interleave(2, 1).repeat_interleave(2, 2))
    sub = subcode_grid(gallery, 0, subcodebook_size=3, columns=4)
    assert sub.shape[1] == 3 * 18 + 2
    colors = code_colors(5)
    assert colors.shape == (5, 3) and len({tuple(c) for c in colors.tolist()}) == 5
    image = (images[0] * 255).to(torch.uint8)
    m = code_map(image, sem[0], colors, gap=4)
    assert m.shape == (3, 32, 68)
    assert torch.equal(m[:, 0, 36 + 0], colors[sem[0, 0, 0]])  # top-left token's colour
    assert torch.equal(m[:, 31, 67], colors[sem[0, 3, 3]])


def test_bad_shapes():
    gallery = PatchGallery(grid_size=4, patch_size=8)
    with pytest.raises(ValueError, match="ids must be"):
        gallery.update(torch.rand(1, 3, 32, 32), torch.zeros(1, 3, 3, dtype=torch.long), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="per_code"):
        PatchGallery(grid_size=4, patch_size=8, per_code=0)
