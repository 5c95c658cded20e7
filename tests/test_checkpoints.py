"""Loading the checkpoints users already have (AdaptSegNet/ADVENT, torchvision VGG16) and our own."""
import pytest
import torch
import torch.nn.functional as F

from training.checkpoints import CheckpointError, load_weights, save_checkpoint
from training.models import Discriminator, build_model


def adaptsegnet_r101_state(num_classes=19, seed=0, prefix=""):
    """Keys and shapes of AdaptSegNet's DeeplabMulti (ResNet-101), written out independently of our model;
    BN buffers as saved by old torch (no num_batches_tracked)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, cout, cin, k, bias=False):
        sd[f"{prefix}{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * 0.01
        if bias:
            sd[f"{prefix}{name}.bias"] = torch.randn(cout, generator=g) * 0.01

    def bn(name, c):
        for field in ("weight", "bias", "running_mean", "running_var"):
            sd[f"{prefix}{name}.{field}"] = torch.rand(c, generator=g) + 0.5

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for li, (planes, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 23, 3)), start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            conv(f"{p}.conv1", planes, inplanes, 1), bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", planes * 4, planes, 1), bn(f"{p}.bn3", planes * 4)
            if b == 0:
                conv(f"{p}.downsample.0", planes * 4, inplanes, 1), bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    for head, cin in (("layer5", 1024), ("layer6", 2048)):
        for i in range(4):
            conv(f"{head}.conv2d_list.{i}", num_classes, cin, 3, bias=True)
    return sd


@pytest.fixture(scope="module")
def adaptsegnet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "GTA2Cityscapes_multi.pth"
    torch.save(adaptsegnet_r101_state(), path)
    return path


@pytest.mark.parametrize("branches", [2, 4])
def test_adaptsegnet_snapshot_loads_completely_and_head_sums_branches(adaptsegnet_file, branches):
    model = build_model("deeplabv2-r101", 19, aspp_branches=branches).eval()
    report = load_weights(model, adaptsegnet_file)
    assert report.fmt == "deeplab"
    assert report.missing == [] and report.unexpected == [] and report.skipped == []
    sd = torch.load(adaptsegnet_file, weights_only=True)
    torch.testing.assert_close(model.encoder.layer3[22].conv2.weight, sd["layer3.22.conv2.weight"], rtol=0, atol=0)
    feat = torch.randn(1, 2048, 9, 11)
    expected = sum(F.conv2d(feat, sd[f"layer6.conv2d_list.{i}.weight"], sd[f"layer6.conv2d_list.{i}.bias"],
                            padding=d, dilation=d) for i, d in list(enumerate((6, 12, 18, 24)))[:branches])
    with torch.no_grad():
        torch.testing.assert_close(model.dec2(feat), expected, rtol=1e-5, atol=1e-5)


def test_deeplab_init_file_with_scale_prefix_skips_foreign_head(tmp_path):
    sd = adaptsegnet_r101_state(prefix="Scale.")
    for k in [k for k in sd if ".layer5." in k or ".layer6." in k]:
        del sd[k]
    for i in range(4):  # the init's single-level COCO head sits on layer4 with 91 classes
        sd[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.zeros(91, 2048, 3, 3)
        sd[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.zeros(91)
    path = tmp_path / "DeepLab_resnet_pretrained_init-f81d91e8.pth"
    torch.save(sd, path)
    model = build_model("deeplabv2-r101", 19)
    report = load_weights(model, path)
    assert report.fmt == "deeplab-init"
    assert report.backbone_complete and report.unexpected == []
    assert len(report.skipped) == 8 and all(k.startswith("Scale.layer5") for k in report.skipped)
    assert sorted({k.split(".")[0] for k in report.missing}) == ["dec1", "dec2"]
    assert "skipped (shape differs): 8" in str(report)


def test_other_class_count_skips_heads_but_loads_backbone(adaptsegnet_file):
    model = build_model("deeplabv2-r101", 16)
    report = load_weights(model, adaptsegnet_file)
    assert len(report.skipped) == 16 and report.backbone_complete
    assert len(report.missing) == 16


def test_torchvision_vgg16_is_sliced_into_deeplab_layout(tmp_path):
    g = torch.Generator().manual_seed(1)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    sd, cin, idx = {}, 3, 0
    for v in cfg:  # torchvision.models.vgg16().features indices
        if v == "M":
            idx += 1
            continue
        sd[f"features.{idx}.weight"] = torch.randn(v, cin, 3, 3, generator=g)
        sd[f"features.{idx}.bias"] = torch.randn(v, generator=g)
        cin, idx = v, idx + 2
    for i, (o, n) in zip((0, 3, 6), ((4096, 25088), (4096, 4096), (1000, 4096))):
        sd[f"classifier.{i}.weight"] = torch.zeros(o, n)
        sd[f"classifier.{i}.bias"] = torch.zeros(o)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(sd, path)
    model = build_model("deeplabv2-vgg16", 19)
    report = load_weights(model, path)
    assert report.fmt == "torchvision-vgg16"
    assert sorted(report.unexpected) == sorted(k for k in sd if k.startswith("classifier"))
    assert torch.equal(model.encoder.features[23].weight, sd["features.24.weight"])  # conv5_1 after pool4
    assert torch.equal(model.encoder.features[27].weight, sd["features.28.weight"])  # conv5_3
    assert torch.equal(model.encoder.features[21].weight, sd["features.21.weight"])  # conv4_3
    assert {k.split(".")[1] for k in report.missing if k.startswith("encoder.")} == {"fc6", "fc7"}


def test_discriminator_snapshots_of_both_references_load(tmp_path):
    src = Discriminator(19)
    names = ["conv1", "conv2", "conv3", "conv4", "classifier"]
    advent = {f"{2 * i}.{f}": getattr(src, n).state_dict()[f] for i, n in enumerate(names) for f in ("weight", "bias")}
    torch.save(advent, tmp_path / "d_advent.pth")
    torch.save(src.state_dict(), tmp_path / "d_adaptsegnet.pth")
    for name, fmt in (("d_advent.pth", "d-advent"), ("d_adaptsegnet.pth", "d-adaptsegnet")):
        dst = Discriminator(19)
        report = load_weights(dst, tmp_path / name)
        assert report.fmt == fmt and not report.missing and not report.unexpected
        assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_our_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    a = build_model("deeplabv2-r18", 7, width=0.125, wtm="both")
    with torch.no_grad():
        a.wtm2.conv.weight.add_(0.1)
    save_checkpoint(tmp_path / "run" / "last.pth", a, iteration=12)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["last.pth"]  # no temp file left
    b = build_model("deeplabv2-r18", 7, width=0.125, wtm="both")
    report = load_weights(b, tmp_path / "run" / "last.pth")
    assert report.fmt == "jal" and not report.missing and not report.unexpected
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_not_a_checkpoint_fails_clearly(tmp_path):
    model = build_model("deeplabv2-r18", 7, width=0.125)
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_weights(model, tmp_path / "notes.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(model, tmp_path / "missing.pth")
    torch.save({"step": 3}, tmp_path / "no_tensors.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_weights(model, tmp_path / "no_tensors.pth")


class Arbitrary:
    """A pickled object of any class would run code on load; weights_only refuses it."""


def test_pickled_code_is_refused_by_weights_only(tmp_path):
    torch.save({"w": torch.zeros(1), "obj": Arbitrary()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_weights(build_model("deeplabv2-r18", 7, width=0.125), tmp_path / "evil.pth")


def test_checkpoint_of_another_architecture_is_named(tmp_path, adaptsegnet_file):
    model = build_model("deeplabv2-r18", 19)
    with pytest.raises(CheckpointError, match="does not fit this architecture"):
        load_weights(model, adaptsegnet_file)
    with pytest.raises(CheckpointError, match="no tensor matches"):
        load_weights(build_model("deeplabv2-vgg16", 19, width=0.125), adaptsegnet_file)
