"""TensorRT path without a GPU: the exported graphs obey TensorRT's ONNX parser rules, the engine builder is
driven through a fake `tensorrt` module with the real API's surface (TensorRT 10 and 11 flavours), and the
run-time side (profiles, the backend, compatibility, ONNX Runtime's TensorRT EP) is in test_tensorrt_runtime.py."""
import enum
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from export.api import ExportError, export_checkpoint
from export.tensorrt_engine import EngineBuildError, EngineShapes, EntropyCalibrator, build_engine
from jal_deploy.labels import get_protocol
from jal_deploy.modelinfo import ModelInfo
from tests.test_export import checkpoint  # noqa: F401 - the shared JAL+WTM checkpoint fixture

QUIET = {"log": lambda *_: None}


# -- a fake `tensorrt` with the surface export/tensorrt_engine.py uses (names as in the 10.x / 11.x bindings) --
def fake_tensorrt(version="10.16.1.11", parse_errors=(), plan=b"plan", cache_none=False, refuse_cache=False):
    trt, major = types.ModuleType("tensorrt"), int(version.split(".")[0])
    state = types.SimpleNamespace(parsed=None, network_flags=None, config=None, batches=0)
    trt.__version__ = version

    class Severity(enum.IntEnum):
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        def __init__(self):
            pass
    ILogger.Severity = Severity
    trt.ILogger = ILogger
    flags = ["TF32", "VERSION_COMPATIBLE"] + ([] if major >= 11 else ["FP16", "INT8", "BF16"])
    trt.BuilderFlag = enum.Enum("BuilderFlag", flags)
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE"])
    trt.HardwareCompatibilityLevel = enum.Enum("HardwareCompatibilityLevel", ["NONE", "AMPERE_PLUS"])

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return b"cache"

    class Config:
        def __init__(self):
            self.flags, self.cache, self.int8_calibrator, self.hardware_compatibility_level = {"TF32"}, None, None, None
            state.config = self

        def set_memory_pool_limit(self, pool, size):
            self.workspace = size

        def add_optimization_profile(self, profile):
            self.profile = profile

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            if refuse_cache and cache.data:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return None if cache_none else self.cache

        def set_flag(self, flag):
            if flag.name in ("FP16", "INT8", "BF16"):  # deprecated since 10.12
                warnings.warn(f"BuilderFlag.{flag.name} is deprecated", DeprecationWarning)
            self.flags.add(flag.name)

        def clear_flag(self, flag):
            self.flags.discard(flag.name)

        def get_flag(self, flag):
            return flag.name in self.flags

        def set_calibration_profile(self, profile):
            pass

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shape = (name, lo, opt, hi)

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = len(parse_errors)

        def parse(self, data):
            state.parsed = data
            return not parse_errors

        def get_error(self, i):
            return parse_errors[i]

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            state.network_flags = flags
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if config.int8_calibrator is not None:  # TensorRT reads batches until None
                while config.int8_calibrator.get_batch(["image"]) is not None:
                    state.batches += 1
                config.int8_calibrator.write_calibration_cache(b"scales")
            if plan is None:
                self.logger.log(Severity.ERROR, "no implementation for node /Conv_3")
            return plan

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                warnings.warn("IInt8EntropyCalibrator2 is deprecated", DeprecationWarning)
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return trt, state


def _info(**kw) -> ModelInfo:
    proto = get_protocol("19")
    return ModelInfo(arch="deeplabv2-r18", class_names=list(proto.class_names), palette=proto.palette.tolist(),
                     input_size=[96, 48], **kw)


# -- 1 and 2: every exported graph obeys the parser; the TensorRT Q/DQ model is symmetric int8 ---------------
@pytest.fixture(scope="module")
def exported(checkpoint, synth_root, tmp_path_factory):  # noqa: F811
    """fp32, fp16, CPU int8 and TensorRT int8 ONNX of one checkpoint; TensorRT itself made unimportable."""
    out = tmp_path_factory.mktemp("trt-graphs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "tensorrt", None)
        with pytest.raises(ExportError, match="jal-deploy\\[trt-cu12\\]") as failed:
            export_checkpoint(checkpoint, out, fp16=True, int8_calibration=str(synth_root / "cityscapes"),
                              calibration_count=4, trt_precisions=("int8",), **QUIET)
    return out, str(failed.value), json.loads((out / "parity.json").read_text())


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    types_ = {v.name: v.type.tensor_type.elem_type for v in values}
    types_.update({i.name: i.data_type for i in graph.initializer})
    return types_


def test_every_exported_graph_casts_its_uint8_input_first(exported):
    out, _, _ = exported
    graphs = sorted(out.glob("*.onnx"))
    assert {p.name for p in graphs} == {"perturbed.onnx", "perturbed.fp16.onnx", "perturbed.int8.onnx",
                                        "perturbed.int8-tensorrt.onnx"}
    for path in graphs:
        model = onnx.load(str(path))
        graph = model.graph
        uint8_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.UINT8}
        assert uint8_inputs == {"image"}, path.name
        consumers = [n.op_type for n in graph.node if set(n.input) & uint8_inputs]
        assert consumers and set(consumers) <= {"Cast", "Shape"}, (path.name, consumers)
        uint8 = {name for name, t in _types(model).items() if t == TensorProto.UINT8}
        if path.name == "perturbed.int8.onnx":  # ONNX Runtime's CPU model: its uint8 tensors are the Q/DQ ones
            qdq = {t for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                   for t in list(n.input) + list(n.output)}
            uint8 -= qdq
        assert uint8 == {"image", "labels"}, (path.name, uint8)


def test_tensorrt_qdq_model_is_symmetric_int8_without_int32_bias_and_passes_parity(exported):
    out, _, summary = exported
    model = onnx.load(str(out / "perturbed.int8-tensorrt.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [n.input[2] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(z in inits for z in zero_points)
    for name in zero_points:
        assert inits[name].data_type == TensorProto.INT8
        assert not onnx.numpy_helper.to_array(inits[name]).any()
    types_ = _types(model)
    dq_inputs = [types_.get(n.input[0]) for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert TensorProto.INT32 not in dq_inputs and TensorProto.UINT8 not in dq_inputs
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(producer.get(n.input[0]) == producer.get(n.input[1]) == "DequantizeLinear" for n in convs)
    assert all(len(n.input) < 3 or n.input[2] in inits for n in convs)  # biases stay float initialisers
    report = {r["artefact"]: r for r in summary["parity"]}["perturbed.int8-tensorrt.onnx"]
    assert report["threshold"] == 95.0 and report["argmax_agreement"] >= 95.0 and report["passed"]
    session = ort.InferenceSession(str(out / "perturbed.int8-tensorrt.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((2, 48, 96, 3), np.uint8)})[0].shape == (2, 48, 96)


def test_missing_tensorrt_fails_the_engine_only_and_says_what_to_install(exported):
    out, message, summary = exported
    assert "other artefacts were written" in message and "perturbed.int8.engine" in message
    status = summary["status"]
    assert {k: s["status"] for k, s in status.items()} == {
        "onnx": "ok", "fp16": "ok", "int8": "ok", "int8_tensorrt": "ok", "trt_int8": "failed"}
    assert "TensorRT is not importable" in status["trt_int8"]["reason"]
    assert set(summary["artefacts"]) == {"onnx", "fp16", "int8", "int8_tensorrt"}
    assert not list(out.glob("*.engine*")) and not list(out.glob("*.calib"))


# -- 3: one wrapper per artefact; a parser failure removes the engine, its sidecar and its cache -------------
@pytest.mark.parametrize("version", ["10.16.1.11", "11.4.0.106"])
def test_parse_failure_fails_its_engine_keeps_the_rest_and_removes_every_engine_file(checkpoint, tmp_path,  # noqa: F811
                                                                                      monkeypatch, version):
    trt, state = fake_tensorrt(version, parse_errors=("In node 0 (importCast): UINT8 tensors must feed a Cast",))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for stale in ("perturbed.fp16.engine", "perturbed.fp16.engine.json", "perturbed.fp16.engine.calib"):
        (tmp_path / stale).write_text("from an earlier run")
    with pytest.raises(ExportError, match="UINT8 tensors must feed a Cast") as failed:
        export_checkpoint(checkpoint, tmp_path, trt_precisions=("fp16",), **QUIET)
    assert "other artefacts were written" in str(failed.value)
    summary = json.loads((tmp_path / "parity.json").read_text())
    assert summary["status"]["onnx"] == {"artefact": "perturbed.onnx", "status": "ok"}
    assert summary["status"]["trt_fp16"]["status"] == "failed"
    assert "could not parse" in summary["status"]["trt_fp16"]["reason"]
    assert [r["artefact"] for r in summary["parity"]][0] == "perturbed.onnx"
    assert (tmp_path / "perturbed.onnx").is_file()
    assert not [p for p in tmp_path.iterdir() if ".engine" in p.name or p.suffix == ".calib"]
    # TensorRT 10 builds fp16 from the fp32 ONNX with a flag; 11 (strongly typed) from the fp16 ONNX.
    source = "perturbed.onnx" if version.startswith("10") else "perturbed.fp16.onnx"
    assert state.parsed == (tmp_path / source).read_bytes() and state.network_flags == 0


def test_profile_that_cannot_run_the_parity_frames_is_refused_before_anything_is_built(checkpoint, tmp_path):  # noqa: F811
    shapes = EngineShapes.parse("1x32x32:1x48x96:1x64x128")  # the odd-size parity frame is 73x147
    with pytest.raises(ExportError, match="147x73.*outside the TensorRT profile 1x32x32:1x48x96:1x64x128"):
        export_checkpoint(checkpoint, tmp_path / "o", trt_precisions=("fp32",), trt_options={"shapes": shapes},
                          **QUIET)
    assert not (tmp_path / "o").exists()


# -- 4, 5, 14: build_engine against the fake API ------------------------------------------------------------------
def _onnx_file(tmp_path) -> Path:
    path = tmp_path / "g.onnx"
    path.write_bytes(b"graph bytes")
    return path


@pytest.mark.parametrize("version", ["10.0.1", "10.16.1.11", "11.4.0.106"])
def test_fp32_engine_clears_tf32_and_deprecations_stay_quiet(tmp_path, monkeypatch, version):
    trt, state = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DeprecationWarning escaping would fail the build
        for precision in ("fp32", "fp16", "int8"):
            engine = build_engine(_onnx_file(tmp_path), tmp_path / f"m.{precision}.engine", _info(), precision, **QUIET)
            sidecar = json.loads((tmp_path / f"m.{precision}.engine.json").read_text())
            assert engine.read_bytes() == b"plan" and sidecar["precision"] == precision
            assert sidecar["tf32"] == (precision != "fp32")
            assert sidecar["profile"] == {"min": [1, 24, 48], "opt": [1, 48, 96], "max": [8, 96, 192]}
            assert state.config.profile.shape == ("image", (1, 24, 48, 3), (1, 48, 96, 3), (8, 96, 192, 3))
            flags = state.config.flags
            if version.startswith("11"):
                assert not flags & {"FP16", "INT8"}
            else:
                assert ("FP16" in flags) == (precision != "fp32") and ("INT8" in flags) == (precision == "int8")
    engine = build_engine(_onnx_file(tmp_path), tmp_path / "t.engine", _info(), "fp32", tf32=True, **QUIET)
    assert json.loads((tmp_path / "t.engine.json").read_text())["tf32"] is True and engine.is_file()


def test_timing_cache_guards_never_leave_an_engine_without_its_sidecar(tmp_path, monkeypatch):
    logged = []
    trt, _ = fake_tensorrt(cache_none=True, refuse_cache=True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from another GPU")
    engine = build_engine(_onnx_file(tmp_path), tmp_path / "m.engine", _info(), "fp16", timing_cache=cache,
                          log=logged.append)
    assert engine.is_file() and (tmp_path / "m.engine.json").is_file()
    assert any("refused the timing cache" in m for m in logged) and any("no timing cache to save" in m for m in logged)
    trt, _ = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build_engine(_onnx_file(tmp_path), tmp_path / "m.engine", _info(), "fp16", timing_cache=cache, **QUIET)
    assert cache.read_bytes() == b"cache"


def test_failed_build_reports_tensorrt_errors_and_writes_nothing(tmp_path, monkeypatch):
    trt, _ = fake_tensorrt(plan=None)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(EngineBuildError, match="no implementation for node /Conv_3"):
        build_engine(_onnx_file(tmp_path), tmp_path / "m.engine", _info(), "fp32", **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]


# -- 7, 8, 9: the TensorRT 10 calibrator ---------------------------------------------------------------------
def test_calibrator_errors_are_raised_after_the_build(tmp_path, monkeypatch):
    trt, state = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    frames = [np.zeros((1, 48, 96, 3), np.uint8)] * 3

    def broken(frame):
        raise MemoryError("cudaMalloc failed")
    with pytest.raises(EngineBuildError, match="int8 calibration failed: MemoryError"):
        build_engine(_onnx_file(tmp_path), tmp_path / "m.engine", _info(), "int8", calibration=frames,
                     to_device=broken, **QUIET)
    assert not (tmp_path / "m.engine").exists() and state.batches == 0
    seen = []
    build_engine(_onnx_file(tmp_path), tmp_path / "m.engine", _info(), "int8", calibration=frames,
                 to_device=lambda f: (seen.append(f), 1234), **QUIET)
    assert state.batches == 3 and len(seen) == 3


def test_calibration_cache_is_keyed_on_the_onnx_hash(tmp_path):
    trt, _ = fake_tensorrt()
    cache, logged = tmp_path / "m.engine.calib", []
    EntropyCalibrator(trt, [], cache, "aaaa", log=logged.append).write_cache(b"scales")
    assert EntropyCalibrator(trt, [], cache, "aaaa", log=logged.append).read_cache() == b"scales"
    assert EntropyCalibrator(trt, [], cache, "bbbb", log=logged.append).read_cache() is None
    assert "written for another ONNX graph" in logged[0]


def test_calibration_frames_follow_the_graph_input_format(checkpoint, synth_root, tmp_path, monkeypatch):  # noqa: F811
    trt, _ = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    calls = []

    def fake_build(source, engine, info, precision, calibration=None, **kw):
        calls.append(calibration)
        raise EngineBuildError("stopped by the test")
    monkeypatch.setattr("export.api.build_engine", fake_build)
    with pytest.raises(ExportError, match="stopped by the test"):
        export_checkpoint(checkpoint, tmp_path, input_format="float_bgr_nchw", output="logits",
                          int8_calibration=str(synth_root / "cityscapes"), calibration_count=2,
                          trt_precisions=("int8",), trt_options={"calibrator": True}, **QUIET)
    (frames,) = calls
    assert len(frames) == 2 and all(f.shape == (1, 3, 48, 96) and f.dtype == np.float32 for f in frames)
    assert abs(float(frames[0].mean())) < 60  # normalised (mean subtracted), not raw 0..255 bytes
