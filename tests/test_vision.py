"""The ViTs' position embeddings: fixed 2-D sin-cos (the default) vs learned."""
import pytest
import torch

from vlmlab.backbones.vision import MAEDecoder, make_vit, sincos_2d


def test_sincos_2d_gives_every_cell_a_distinct_unit_scale_code_and_the_cls_row_zero():
    pe = sincos_2d(grid=4, dim=16, n_prefix=1)  # [1, 1 + 16, 16]
    assert pe.shape == (1, 17, 16)
    assert torch.equal(pe[0, 0], torch.zeros(16))
    body = pe[0, 1:]
    assert torch.allclose(body.norm(dim=-1), torch.full((16,), 8 ** 0.5))  # sqrt(dim/2): sin^2 + cos^2 per pair
    assert torch.cdist(body, body).add(torch.eye(16) * 99).min() > 0.1  # no two cells share a code
    # the first half depends on the row only, the second on the column only (raster order: token k = (k//4, k%4))
    assert torch.equal(body[1, :8], body[2, :8]) and not torch.equal(body[1, 8:], body[2, 8:])
    assert torch.equal(body[1, 8:], body[5, 8:]) and not torch.equal(body[1, :8], body[5, :8])


def test_sincos_vit_keeps_its_position_embeddings_fixed_and_learned_ones_train():
    fixed, learned = make_vit(32, 8, 16, 1, 2, "sincos"), make_vit(32, 8, 16, 1, 2, "learned")
    assert not fixed.pos_embed.requires_grad and learned.pos_embed.requires_grad
    assert torch.equal(fixed.pos_embed, sincos_2d(4, 16))
    assert learned.pos_embed.norm(dim=-1).mean() < 0.5  # timm's init: std 0.02, tiny beside a patch embedding
    dec = MAEDecoder(16, 16, 1, 2, 16, 8 * 8 * 3, "sincos")
    assert not dec.pos.requires_grad and torch.equal(dec.pos, sincos_2d(4, 16))


def test_bad_position_embedding_names_the_parameter_and_the_allowed_values():
    with pytest.raises(ValueError, match=r"pos_embed='rope'.*allowed values: \('sincos', 'learned'\)"):
        make_vit(32, 8, 16, 1, 2, "rope")
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(4, 18)
