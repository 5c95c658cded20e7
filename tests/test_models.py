"""The paper's networks: exact sizes, output shapes and the BN policy."""
import pytest
import torch

from training.models import ARCHS, Discriminator, build_model


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def r101():
    return build_model("deeplabv2-r101", 19).eval()


def test_r101_two_level_matches_reference_size(r101):
    assert n_params(r101) == 44_601_560
    assert len(r101.state_dict()) == 640


@pytest.mark.parametrize("hw,out", [((97, 129), (13, 17)), ((64, 64), (9, 9)), ((65, 33), (9, 5))])
def test_r101_output_shapes_on_odd_sizes(r101, hw, out):
    with torch.no_grad():
        y = r101(torch.zeros(1, 3, *hw))
    assert set(y) == {"low", "high"}
    assert tuple(y["low"].shape) == (1, 19, *out) and tuple(y["high"].shape) == (1, 19, *out)


def test_r101_backbone_bn_affine_frozen_and_head_layout(r101):
    bn_params = [p for n, p in r101.named_parameters() if ".bn" in n or "downsample.1" in n]
    assert bn_params and not any(p.requires_grad for p in bn_params)
    assert r101.encoder.maxpool.ceil_mode
    # Caffe-style: the stride of layer2 sits on the first 1x1 conv, not the 3x3.
    assert r101.encoder.layer2[0].conv1.stride == (2, 2) and r101.encoder.layer2[0].conv2.stride == (1, 1)
    assert r101.encoder.layer3[0].conv2.dilation == (2, 2) and r101.encoder.layer4[0].conv2.dilation == (4, 4)
    assert [c.dilation[0] for c in r101.dec2.branches] == [6, 12, 18, 24]
    assert r101.dec1.branches[0].in_channels == 1024 and r101.dec2.branches[0].in_channels == 2048


def test_vgg16_sizes_and_output_stride_8():
    m = build_model("deeplabv2-vgg16", 19).eval()
    one_head = n_params(m.encoder) + n_params(m.dec2)
    assert one_head == 29_573_004
    assert m.dec1.branches[0].in_channels == 512 and m.dec2.branches[0].in_channels == 1024
    with torch.no_grad():
        y = m(torch.zeros(1, 3, 96, 160))
    assert tuple(y["low"].shape) == tuple(y["high"].shape) == (1, 19, 12, 20)


def test_discriminator_matches_paper():
    d = Discriminator(19)
    assert n_params(d) == 2_781_121
    assert tuple(d(torch.zeros(1, 19, 512, 1024)).shape) == (1, 1, 16, 32)
    assert [c.out_channels for c in (d.conv1, d.conv2, d.conv3, d.conv4, d.classifier)] == [64, 128, 256, 512, 1]
    assert d.act.negative_slope == 0.2


def test_all_archs_build_with_wtm_and_return_named_outputs():
    for arch in ARCHS:
        m = build_model(arch, 5, width=0.125, wtm="both").eval()
        with torch.no_grad():
            y = m(torch.zeros(1, 3, 40, 48))
        assert set(y) == {"low", "high", "low_t", "high_t"}, arch
        assert all(v.shape[1] == 5 for v in y.values())


def test_unknown_arch_and_options_fail_clearly():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("deeplabv3-r50")
    with pytest.raises(ValueError, match="bn_mode"):
        build_model("deeplabv2-r18", width=0.125, bn_mode="sync")
    with pytest.raises(ValueError, match="wtm"):
        build_model("deeplabv2-r18", width=0.125, wtm="middle")
    with pytest.raises(ValueError, match="aspp_branches"):
        build_model("deeplabv2-r18", width=0.125, aspp_branches=5)


def test_bn_mode_frozen_keeps_statistics_while_training():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 48) * 3 + 1
    frozen = build_model("deeplabv2-r18", 4, width=0.125, bn_mode="frozen").train()
    before = frozen.encoder.bn1.running_mean.clone()
    frozen(x)
    assert torch.equal(frozen.encoder.bn1.running_mean, before)
    assert not frozen.encoder.bn1.training and frozen.training
    live = build_model("deeplabv2-r18", 4, width=0.125, bn_mode="train").train()
    live(x)
    assert not torch.equal(live.encoder.bn1.running_mean, before)


@pytest.mark.parametrize("hw", [(32, 32), (33, 47), (48, 65), (97, 129)])
def test_stem_pool_equals_ceil_mode_max_pool(hw):
    from training.models.resnet import StemMaxPool
    x = torch.relu(torch.randn(2, 4, *hw))
    ref = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)(x)
    assert torch.equal(StemMaxPool()(x), ref)
