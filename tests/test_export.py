"""jal-export: folded deploy graph, ONNX and .pt2 artefacts proven against the unfolded model."""
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from export.api import export_checkpoint
from export.cli import main as export_main
from export.deploy import DeployNet, load_trained
from export.onnx_export import read_metadata
from tests.test_training import tiny_cfg
from training.engine import Trainer


@pytest.fixture(scope="module")
def checkpoint(synth_root, tmp_path_factory):
    """A JAL+WTM checkpoint from the real trainer, with WTM2 moved well away from the identity."""
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(tiny_cfg(synth_root, "jal-wtm", iters=1), out, progress=False)
    trainer.run()
    torch.manual_seed(1)
    with torch.no_grad():
        trainer.model.wtm2.conv.weight.add_(0.05 * torch.randn_like(trainer.model.wtm2.conv.weight))
    return trainer.save("perturbed.pth")


def test_onnx_and_program_match_the_unfolded_model_and_carry_metadata(checkpoint, synth_root, tmp_path):
    summary = export_checkpoint(checkpoint, tmp_path, torch_program=True, output="logits",
                                val_root=str(synth_root / "cityscapes"), val_limit=3, log=lambda *_: None)
    for report in summary["parity"]:
        assert report["passed"] and report["argmax_agreement"] == 100.0
        assert report["max_abs_logit_error"] < 1e-4  # folded vs unfolded: float32 rounding
        assert report["miou_delta"] == 0.0 and 0.0 <= report["miou_reference"] <= 1.0
    info = read_metadata(tmp_path / "perturbed.onnx")
    assert info.to_json() == json.dumps(summary["model_info"], sort_keys=True)
    assert info.arch == "deeplabv2-r18" and info.num_classes == 19 and info.input_size == [96, 48]
    assert info.provenance["method"] == "jal-wtm" and info.provenance["iteration"] == 1
    assert json.loads((tmp_path / "parity.json").read_text())["artefacts"]["torch"].endswith("perturbed.pt2")


def test_folding_really_changes_the_decoder(checkpoint):
    model, _ = load_trained(checkpoint)
    folded = DeployNet(model, [0, 0, 0], [1, 1, 1], "float_bgr_nchw", "logits").decoder
    assert (folded.branches[0].weight - model.dec2.branches[0].weight).abs().max() > 1e-3


def test_padded_classifier_keeps_labels_and_logits(checkpoint, tmp_path):
    """--pad-classes: zero output channels for the tensor cores, sliced off in the graph before the upsample, so
    the labels are identical and the logits equal to float rounding (a wider convolution may sum differently)."""
    model, _ = load_trained(checkpoint)
    mean = [104.0, 116.7, 122.7]
    plain = DeployNet(model, mean, [1, 1, 1], output="logits")
    padded = DeployNet(model, mean, [1, 1, 1], output="logits", pad_classes=24)
    conv = padded.decoder.branches[0]
    assert conv.out_channels == 24 and not conv.weight[19:].any() and not conv.bias[19:].any()
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 48, 96, 3), dtype=np.uint8))
    with torch.no_grad():
        ref, out = plain(frames), padded(frames)
        assert out.shape == ref.shape == (2, 19, 48, 96)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        plain.output = padded.output = "labels"
        assert torch.equal(padded(frames), plain(frames))
    summary = export_checkpoint(checkpoint, tmp_path, torch_program=True, pad_classes=32, log=lambda *_: None)
    assert summary["pad_classes"] == 32 and all(r["passed"] for r in summary["parity"])
    result = CliRunner().invoke(export_main, [str(checkpoint), "--out", str(tmp_path / "few"), "--pad-classes", "8"])
    assert result.exit_code == 1 and "fewer than the model's 19 classes" in result.output, result.output


def test_label_graph_has_dynamic_batch_and_size(checkpoint, tmp_path):
    export_checkpoint(checkpoint, tmp_path, log=lambda *_: None)  # defaults: uint8 frames in, labels out
    session = ort.InferenceSession(str(tmp_path / "perturbed.onnx"), providers=["CPUExecutionProvider"])
    model, _ = load_trained(checkpoint)
    net = DeployNet(model, read_metadata(tmp_path / "perturbed.onnx").mean, [1, 1, 1])
    rng = np.random.default_rng(0)
    for shape in [(3, 61, 83, 3), (1, 40, 130, 3)]:
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        out = session.run(None, {"image": frames})[0]
        assert out.shape == shape[:3] and out.dtype == np.uint8
        ref = net(torch.from_numpy(frames)).numpy()
        assert (out == ref).mean() > 0.999


def test_program_loads_without_training_code(checkpoint, tmp_path):
    export_checkpoint(checkpoint, tmp_path, onnx=False, torch_program=True, log=lambda *_: None)
    code = (
        "import sys, json, torch\n"
        f"extra = {{'model_info.json': ''}}\n"
        f"p = torch.export.load({str(tmp_path / 'perturbed.pt2')!r}, extra_files=extra)\n"
        "out = p.module()(torch.zeros(2, 50, 70, 3, dtype=torch.uint8))\n"
        "assert tuple(out.shape) == (2, 50, 70), out.shape\n"
        "assert json.loads(extra['model_info.json'])['output'] == 'labels'\n"
        "assert 'training' not in sys.modules and 'export' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]


def test_bad_inputs_fail_cleanly_and_leave_nothing(checkpoint, tmp_path):
    runner = CliRunner()
    cases = [
        ([str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o1")], "checkpoint not found"),
        ([__file__, "--out", str(tmp_path / "o2")], "not a readable PyTorch checkpoint"),
        ([str(checkpoint), "--out", str(tmp_path / "o3"), "--arch", "deeplabv2-r101"], "trained with arch=deeplabv2-r18"),
    ]
    for args, message in cases:
        result = runner.invoke(export_main, args)
        assert result.exit_code == 1 and message in result.output, result.output
        assert not (tmp_path / args[2].split("/")[-1]).exists()
    (tmp_path / "a_file").write_text("x")
    result = runner.invoke(export_main, [str(checkpoint), "--out", str(tmp_path / "a_file" / "sub")])
    assert result.exit_code == 1 and "cannot write to" in result.output


def test_fp16_keeps_float32_io_and_int8_reports_its_agreement(checkpoint, synth_root, tmp_path):
    summary = export_checkpoint(checkpoint, tmp_path, output="logits", fp16=True,
                                int8_calibration=str(synth_root / "cityscapes"), calibration_count=4,
                                val_root=str(synth_root / "cityscapes"), val_limit=4, log=lambda *_: None)
    fp16 = ort.InferenceSession(str(tmp_path / "perturbed.fp16.onnx"), providers=["CPUExecutionProvider"])
    assert [o.type for o in fp16.get_outputs()] == ["tensor(float)"]
    assert [i.type for i in fp16.get_inputs()] == ["tensor(uint8)"]
    assert read_metadata(tmp_path / "perturbed.fp16.onnx").precision == "fp16"
    assert read_metadata(tmp_path / "perturbed.int8.onnx").precision == "int8"
    import onnx
    from onnx import numpy_helper
    int8 = onnx.load(str(tmp_path / "perturbed.int8.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
    # 7-bit weights: no uint8 x int8 pair sum can saturate on CPUs without VNNI (same predictions on every x86-64)
    weights = [numpy_helper.to_array(t) for t in int8.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and all(w.min() >= -64 and w.max() <= 64 for w in weights)  # 255 * 64 * 2 = 32640
    assert max(int(w.max()) for w in weights) >= 60  # the 7-bit range is used, not a further shrunk one
    by_name = {r["artefact"]: r for r in summary["parity"]}
    assert by_name["perturbed.fp16.onnx"]["argmax_agreement"] >= 99.0
    assert by_name["perturbed.fp16.onnx"]["max_abs_logit_error"] < 0.05
    assert by_name["perturbed.int8.onnx"]["threshold"] == 95.0
    assert by_name["perturbed.int8.onnx"]["passed"] == (by_name["perturbed.int8.onnx"]["argmax_agreement"] >= 95.0)
    assert by_name["perturbed.int8.onnx"]["miou_delta"] is not None


def _tensorrt_and_gpu() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_tensorrt_and_gpu(), reason="TensorRT and a GPU are present: the engine test below runs")
def test_trt_without_tensorrt_says_what_to_install_and_keeps_the_other_artefacts(checkpoint, tmp_path):
    result = CliRunner().invoke(export_main, [str(checkpoint), "--out", str(tmp_path), "--trt", "fp16"])
    assert result.exit_code == 1
    assert "pip install 'jal-deploy[trt-cu12]'" in result.output and "other artefacts were written" in result.output
    assert (tmp_path / "perturbed.onnx").is_file() and (tmp_path / "parity.json").is_file()
    assert not list(tmp_path.glob("*.engine*"))
    status = json.loads((tmp_path / "parity.json").read_text())["status"]
    assert status["onnx"]["status"] == "ok" and status["trt_fp16"]["status"] == "failed"


@pytest.mark.skipif(not _tensorrt_and_gpu(), reason="needs the tensorrt package and an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trt_engine_matches_pytorch_and_writes_its_sidecar(checkpoint, synth_root, tmp_path, precision):
    data = str(synth_root / "cityscapes")
    summary = export_checkpoint(checkpoint, tmp_path, trt_precisions=(precision,), val_root=data, val_limit=4,
                                int8_calibration=data if precision == "int8" else None, calibration_count=4,
                                log=lambda *_: None)
    report = {r["artefact"]: r for r in summary["parity"]}[f"perturbed.{precision}.engine"]
    assert report["passed"] and report["tf32"] == (precision != "fp32")
    sidecar = json.loads((tmp_path / f"perturbed.{precision}.engine.json").read_text())
    assert sidecar["precision"] == precision and sidecar["model_info"]["arch"] == "deeplabv2-r18"
    assert sidecar["compute_capability"] != "unknown" and sidecar["profile"]["max"][0] == 8
    assert (tmp_path / "timing.cache").is_file()
    from jal_deploy.segmenter import Segmenter
    with Segmenter.from_path(tmp_path / f"perturbed.{precision}.engine") as seg:  # portrait and batch 9 fit
        labels = seg.predict_batch([np.zeros((300, 100, 3), np.uint8)] + [np.zeros((48, 96, 3), np.uint8)] * 9)
        assert [x.shape for x in labels] == [(300, 100)] + [(48, 96)] * 9


def test_released_adaptsegnet_style_model_exports_its_dec2(tmp_path):
    """A bare AdaptSegNet-layout state dict (layer5/layer6 heads, no WTM, no config) exports Dec2."""
    from training.models import build_model
    torch.manual_seed(0)
    src = build_model("deeplabv2-r18", 19, aspp_branches=2)
    bare = {}
    for k, v in src.state_dict().items():
        k = k.replace("encoder.", "", 1).replace("dec1.branches.", "layer5.conv2d_list.")
        bare[k.replace("dec2.branches.", "layer6.conv2d_list.")] = v
    torch.save(bare, tmp_path / "GTA2Cityscapes_r18.pth")
    result = CliRunner().invoke(export_main, [str(tmp_path / "GTA2Cityscapes_r18.pth"), "--out", str(tmp_path / "o"),
                                              "--arch", "deeplabv2-r18", "--classes", "19", "--aspp-branches", "2",
                                              "--output", "logits", "--static"])
    assert result.exit_code == 0, result.output
    parity = json.loads((tmp_path / "o" / "parity.json").read_text())["parity"][0]
    # Random full-width weights: logits in the hundreds, so float32 rounding reaches ~1e-3 and near-ties occur.
    assert parity["argmax_agreement"] > 99.99 and parity["max_abs_logit_error"] < 1e-2
    info = read_metadata(tmp_path / "o" / "GTA2Cityscapes_r18.onnx")
    assert info.input_size == [1024, 512] and not info.dynamic and info.provenance["iteration"] is None


def test_trt_shapes_are_validated():
    from export.tensorrt_engine import EngineShapes
    assert EngineShapes.parse("1x256x512:1x512x1024:4x1024x2048").max == (4, 1024, 2048)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        EngineShapes.parse("1x512x512:1x256x512:1x1024x1024")
    result = CliRunner().invoke(export_main, ["x.pth", "--out", "o", "--trt-shapes", "1x2"])
    assert result.exit_code == 2 and "--trt-shapes" in result.output
