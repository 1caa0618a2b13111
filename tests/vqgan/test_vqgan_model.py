"""VQGAN architecture: padding arithmetic, asymmetric downsampling, errors, discriminators."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tats.vqgan import VQGAN, NLayerDiscriminator2D, NLayerDiscriminator3D, VQGANConfig
from tats.vqgan.modules import SamePadConv3d, SamePadConvTranspose3d
from tests.numerics import assert_close_to_scale


def _tiny(downsample, **kw) -> VQGANConfig:
    base = dict(n_codes=16, embedding_dim=4, n_hiddens=4, norm_type="batch", downsample=downsample,
                sequence_length=8, resolution=16)
    return VQGANConfig(**{**base, **kw})


def test_same_pad_front_gets_larger_half():
    # k=4, s=1 -> 3 padded positions per dim: 2 in front, 1 behind. A kernel that reads only its first
    # tap shows where the zero ("constant") padding went.
    conv = SamePadConv3d(1, 1, (4, 1, 1), padding_type="constant", bias=False)
    nn.init.zeros_(conv.conv.weight)
    conv.conv.weight.data[0, 0, 0] = 1.0
    x = torch.arange(1.0, 6.0).view(1, 1, 5, 1, 1)
    assert conv(x).flatten().tolist() == [0.0, 0.0, 1.0, 2.0, 3.0]
    # replicate padding repeats the edge instead; the last tap sees the back padding (1 position)
    conv.padding_type = "replicate"
    assert conv(x).flatten().tolist() == [1.0, 1.0, 1.0, 2.0, 3.0]
    conv.conv.weight.data.zero_()
    conv.conv.weight.data[0, 0, 3] = 1.0
    assert conv(x).flatten().tolist() == [2.0, 3.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize("size", [5, 8])
def test_same_pad_shapes(size):
    x = torch.randn(1, 2, size, size, size)
    assert SamePadConv3d(2, 3, 4, stride=2)(x).shape == (1, 3, size // 2, size // 2, size // 2)  # floor
    assert SamePadConv3d(2, 3, 4, stride=(1, 2, 2))(x).shape[2] == size
    assert SamePadConvTranspose3d(2, 3, 4, stride=2)(x).shape == (1, 3, 2 * size, 2 * size, 2 * size)
    assert SamePadConvTranspose3d(2, 3, 4, stride=(1, 2, 1))(x).shape == (1, 3, size, 2 * size, size)


@pytest.mark.parametrize("downsample,blocks", [((2, 4, 4), 2), ((4, 8, 8), 3), ((1, 2, 2), 1)])
def test_asymmetric_downsampling(downsample, blocks):
    config = _tiny(downsample)
    model = VQGAN(config)
    assert len(model.encoder.conv_blocks) == len(model.decoder.conv_blocks) == blocks
    # stride 2 only while a dim still needs halving: e.g. (2, 4, 4) -> (2, 2, 2), then (1, 2, 2)
    first = model.encoder.conv_blocks[0].down.conv.stride
    last = model.encoder.conv_blocks[-1].down.conv.stride
    assert first == tuple(2 if d > 1 else 1 for d in downsample)
    assert last == tuple(2 if d == 2**blocks else 1 for d in downsample)
    assert [b.up.convt.stride for b in model.decoder.conv_blocks] == \
        [b.down.conv.stride for b in model.encoder.conv_blocks]
    video = torch.rand(1, 3, 8, 16, 16) - 0.5
    latent = config.latent_shape
    assert latent == (8 // downsample[0], 16 // downsample[1], 16 // downsample[2])
    out = model.train()(video)
    assert out["recon"].shape == video.shape and out["codes"].shape == (1, *latent)
    assert 0 < out["usage"].item() <= 1 and 1 <= out["perplexity"].item() <= 16
    model.eval()
    codes = model.encode(video)
    assert codes.shape == (1, *latent) and codes.dtype == torch.long
    assert model.decode(codes).shape == video.shape


def test_padding_type_only_on_first_down_and_pre_vq():
    model = VQGAN(_tiny((2, 2, 2), padding_type="reflect"))
    assert model.encoder.conv_first.padding_type == "reflect"
    assert model.encoder.conv_blocks[0].down.padding_type == "reflect"
    assert model.pre_vq_conv.padding_type == "reflect"
    assert model.encoder.conv_blocks[0].res.conv1.padding_type == "replicate"
    assert model.decoder.conv_last.padding_type == "replicate"


def test_config_errors_name_the_flag():
    with pytest.raises(ValueError, match="--sequence_length 10 is not divisible"):
        _tiny((4, 4, 4), sequence_length=10)
    with pytest.raises(ValueError, match="--resolution 16 is not divisible"):
        _tiny((1, 32, 32))
    with pytest.raises(ValueError, match="--downsample: the t factor must be a power of two"):
        _tiny((3, 4, 4))
    with pytest.raises(ValueError, match="--norm_type group"):
        _tiny((2, 2, 2), norm_type="group", n_hiddens=4)
    model = VQGAN(_tiny((2, 4, 4)))
    with pytest.raises(ValueError, match="W=18 is not divisible by its downsample factor 4"):
        model.encode(torch.zeros(1, 3, 8, 16, 18))
    with pytest.raises(ValueError, match="codes must lie in"):
        model.decode(torch.full((1, 4, 4, 4), 16))


def test_config_from_dict_ignores_unknown_and_round_trips():
    d = {**_tiny((2, 4, 4)).to_dict(), "gpus": 8, "max_steps": 10}
    config = VQGANConfig.from_dict(d)
    assert config.downsample == (2, 4, 4) and VQGANConfig.from_dict(config.to_dict()) == config


def test_channels_last_3d_matches():
    config = _tiny((2, 2, 2))
    a, b = VQGAN(config).eval(), VQGAN(config, channels_last_3d=True).eval()
    b.load_state_dict(a.state_dict())
    video = torch.rand(1, 3, 8, 16, 16) - 0.5
    with torch.no_grad():
        assert_close_to_scale(b(video)["recon"], a(video)["recon"], max_ulps=32)  # another conv kernel


def test_discriminators():
    d2, d3 = NLayerDiscriminator2D(3, 8, 3), NLayerDiscriminator3D(3, 32, 2, norm_type="group")
    logits, feats = d2(torch.randn(2, 3, 32, 32))
    # 32 -> 17 -> 9 -> 5 (stride 2, k4, p2), then 6 -> 7 (stride 1)
    assert [f.shape[1:] for f in feats] == [(8, 17, 17), (16, 9, 9), (32, 5, 5), (64, 6, 6), (1, 7, 7)]
    assert logits is feats[-1]
    logits3, feats3 = d3(torch.randn(1, 3, 8, 16, 16))
    assert len(feats3) == 4 and logits3.shape == (1, 1, 5, 7, 7)  # 8->5->3->4->5, 16->9->5->6->7
    assert isinstance(d3.model2[1], nn.GroupNorm) and isinstance(d2.model1[1], nn.BatchNorm2d)
    assert NLayerDiscriminator2D(3, 256, 4).model3[0].out_channels == 512  # capped at 512
