"""TensorRT at run time without a GPU: the runtime's profile handling, the TensorRT backend against fake TensorRT and
cuda-python objects, the engine compatibility decision, the packaging extras and ONNX Runtime's TensorRT execution
provider options, as plain functions (the export side is in test_tensorrt.py)."""
import enum
import json
import sys
import tomllib
import types
from pathlib import Path

import numpy as np
import pytest

from jal_deploy.backends.base import Backend, BackendError, InputRange
from jal_deploy.backends.ort_backend import CUDA, TRT, fallback_message, tensorrt_options
from jal_deploy.backends.trt_backend import compatibility
from jal_deploy.segmenter import Segmenter
from tests.test_tensorrt import _info, fake_tensorrt


# -- 6: the runtime picks sizes inside what the backend accepts and splits batches ---------------------------------
class ProfileBackend(Backend):
    """A backend with a TensorRT-like profile: batch 1-2, heights 24-64, widths 48-128."""

    name = "profile"

    def __init__(self):
        super().__init__()
        self.info = _info()
        self.accepts = InputRange.from_profile((1, 24, 48), (1, 48, 96), (2, 64, 128))
        self.calls = []

    def __call__(self, batch):
        if not self.accepts.contains(*batch.shape[:3]):
            raise self.shape_error(batch, RuntimeError("outside the profile"))
        self.calls.append(batch.shape[:3])
        return np.ones(batch.shape[:3], np.uint8)


def test_segmenter_picks_sizes_inside_the_profile_and_splits_batches():
    backend = ProfileBackend()
    seg = Segmenter(backend)
    assert seg.inference_size(200, 100) == (96, 48)        # the training size, as before
    w, h = seg.inference_size(100, 400)                     # portrait: 96 wide would need 384 high
    assert (w, h) == (48, 64) and backend.accepts.contains(1, h, w)
    assert seg.inference_size(1000, 50) == (96, 32)         # already inside: unchanged
    frames = [np.zeros((100, 200, 3), np.uint8)] * 5 + [np.zeros((400, 100, 3), np.uint8)]
    labels = seg.predict_batch(frames)
    assert [x.shape for x in labels] == [(100, 200)] * 5 + [(400, 100)]
    assert sorted(backend.calls) == sorted([(2, 48, 96), (2, 48, 96), (1, 48, 96), (1, 64, 48)])
    with pytest.raises(ValueError, match="batch 1-2, height 24-64, width 48-128"):
        Segmenter(backend, size=(256, 128))
    with pytest.raises(BackendError, match="it accepts batch 1-2, height 24-64, width 48-128"):
        backend(np.zeros((3, 48, 96, 3), np.uint8))


# -- 10: the TensorRT backend against fake TensorRT and cuda-python objects --------------------------------------
def _fake_runtime_stack(monkeypatch, tmp_path, runtime_error=None):
    trt, _ = fake_tensorrt()
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    trt.TensorIOMode = enum.Enum("TensorIOMode", ["INPUT", "OUTPUT"])
    trt.nptype = lambda t: t
    profile = [(1, 24, 48, 3), (1, 48, 96, 3), (4, 96, 192, 3)]

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["image", "labels"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "image" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return np.uint8

        def get_tensor_profile_shape(self, name, index):
            return profile

        def create_execution_context(self):
            return object()

    class Runtime:
        def __init__(self, logger):
            if runtime_error:
                raise runtime_error

        def deserialize_cuda_engine(self, data):
            return Engine()
    trt.Runtime = Runtime
    cudart = types.SimpleNamespace(destroyed=[])
    cudart.cudaError_t = types.SimpleNamespace(cudaSuccess=0)
    cudart.cudaGetDevice = lambda: (0, 0)
    cudart.cudaGetDeviceProperties = lambda d: (0, types.SimpleNamespace(name=b"NVIDIA H100 PCIe", major=9, minor=0))
    cudart.cudaStreamCreate = lambda: (0, "stream-1")
    cudart.cudaStreamDestroy = lambda s: cudart.destroyed.append(s) or (0,)
    cudart.cudaFree = lambda p: (0,)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("jal_deploy.backends.trt_backend.import_cudart", lambda: cudart)
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "m.fp16.engine.json").write_text(json.dumps({
        "model_info": json.loads(_info().to_json()), "precision": "fp16", "tensorrt": trt.__version__,
        "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}))
    return engine, cudart


def test_tensorrt_backend_reads_its_profile_checks_dtype_and_destroys_its_stream(tmp_path, monkeypatch):
    from jal_deploy.backends.trt_backend import TensorRTBackend
    engine, cudart = _fake_runtime_stack(monkeypatch, tmp_path)
    backend = TensorRTBackend(engine)
    assert backend.input_range() == InputRange((1, 4), (24, 96), (48, 192), (1, 48, 96))
    assert any("same compute capability 9.0" in n for n in backend.notes)  # SXM engine on a PCIe card
    with pytest.raises(BackendError, match="takes uint8 input"):
        backend(np.zeros((1, 48, 96, 3), np.float32))
    with pytest.raises(BackendError, match="it accepts batch 1-4, height 24-96, width 48-192"):
        backend(np.zeros((5, 48, 96, 3), np.uint8))
    assert Segmenter(backend).inference_size(100, 400) == (48, 96)
    backend.close()
    backend.close()
    assert cudart.destroyed == ["stream-1"]


def test_tensorrt_runtime_failure_is_a_backend_error(tmp_path, monkeypatch):
    from jal_deploy.backends.trt_backend import TensorRTBackend
    engine, _ = _fake_runtime_stack(monkeypatch, tmp_path, TypeError("factory function returned nullptr"))
    with pytest.raises(BackendError, match="could not start its runtime .*factory function returned nullptr"):
        TensorRTBackend(engine)


# -- 11: the engine compatibility decision ------------------------------------------------------------------------
HERE = {"tensorrt": "10.16.1.11", "gpu": "NVIDIA H100 PCIe", "compute_capability": "9.0"}


@pytest.mark.parametrize("built, refused, noted", [
    ({"tensorrt": "10.16.1.11", "gpu": "NVIDIA H100 PCIe", "compute_capability": "9.0"}, None, None),
    ({"tensorrt": "10.16.1.11", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}, None, "same compute"),
    ({"tensorrt": "10.16.0.72", "gpu": "NVIDIA H100 PCIe", "compute_capability": "9.0"}, "TensorRT 10.16.0.72", None),
    ({"tensorrt": "10.16.1.11", "gpu": "NVIDIA A100", "compute_capability": "8.0"}, "compute capability 8.0", None),
    # version-compatible: a newer 10.x runs it, the GPU is still checked
    ({"tensorrt": "10.8.0.43", "version_compatible": True, "compute_capability": "9.0", "gpu": "NVIDIA H100 PCIe"}, None, None),
    ({"tensorrt": "10.8.0.43", "version_compatible": True, "compute_capability": "8.6", "gpu": "NVIDIA H100 PCIe"},
     "compute capability 8.6", None),
    ({"tensorrt": "11.0.0.114", "version_compatible": True, "compute_capability": "9.0", "gpu": "NVIDIA H100 PCIe"},
     "version-compatible", None),
    # hardware-compatible: any Ampere+ GPU, the version is still checked
    ({"tensorrt": "10.16.1.11", "hardware_compatible": "ampere_plus", "compute_capability": "8.6"}, None, None),
    ({"tensorrt": "10.13.3.9", "hardware_compatible": "ampere_plus", "compute_capability": "8.6"},
     "TensorRT 10.13.3.9", None),
])
def test_engine_compatibility_compares_version_and_compute_capability(built, refused, noted):
    problems, notes = compatibility(built, HERE)
    assert (refused is None) == (not problems) and (refused is None or refused in problems[0]), problems
    assert (noted is None) == (not notes) and (noted is None or noted in notes[0]), notes
    old_gpu = {**HERE, "compute_capability": "7.5", "gpu": "Tesla T4"}
    assert compatibility({"tensorrt": "10.16.1.11", "hardware_compatible": "ampere_plus"}, old_gpu)[0]


# -- 12, 13: packaging and ONNX Runtime's TensorRT execution provider ------------------------------------------------
def test_tensorrt_extras_pin_matching_cuda_majors():
    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for major in ("12", "13"):
        pins = " ".join(extras[f"trt-cu{major}"])
        assert f"tensorrt-cu{major}>=" in pins and f"cuda-python>={major}" in pins
        assert f"cuda-python>={major}" in pins and f"<{int(major) + 1}" in pins
    assert extras["trt"] == ["jal-deploy[trt-cu12]"]


def test_onnxruntime_tensorrt_options_cache_next_to_the_model_with_the_profile(tmp_path):
    options = tensorrt_options(tmp_path / "m.fp16.onnx", _info(precision="fp16"))
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"] and options["trt_fp16_enable"]
    assert options["trt_engine_cache_path"] == str(tmp_path / "m.fp16.ort-trt-cache")
    assert options["trt_timing_cache_path"] == options["trt_engine_cache_path"]
    assert (options["trt_profile_min_shapes"], options["trt_profile_opt_shapes"], options["trt_profile_max_shapes"]) \
        == ("image:1x24x48x3", "image:1x48x96x3", "image:8x96x192x3")
    float_static = tensorrt_options(tmp_path / "m.onnx", _info(input_format="float_bgr_nchw", dynamic=False))
    assert not float_static["trt_fp16_enable"] and float_static["trt_profile_max_shapes"] == "image:1x3x48x96"
    assert "TensorRT libraries missing" in fallback_message(TRT, "CPUExecutionProvider")
    assert "CUDA/cuDNN" in fallback_message(CUDA, "CPUExecutionProvider")
