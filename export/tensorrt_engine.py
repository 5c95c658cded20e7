"""TensorRT engines from the exported ONNX graphs, for TensorRT 10 and 11 (chosen by feature detection).

- TensorRT 10: the fp32 ONNX plus builder flags: `BuilderFlag.FP16` for fp16; `BuilderFlag.INT8` with an
  entropy calibrator fed with target images for int8.
- TensorRT 11: networks are strongly typed and the precision flags and calibrators are gone, so precision
  comes from the graph itself: fp16 from the fp16 ONNX, int8 from the Q/DQ ONNX.
Both: a workspace limit, one optimisation profile from the requested shapes, a persistent timing cache,
optional version-compatible / hardware-compatible builds, and a JSON sidecar (`<engine>.json`) holding
`ModelInfo` plus the TensorRT version and GPU the engine was built on (engines are tied to both). The
runtime's `TensorRTBackend` (jal_deploy.backends) runs the engines, for the parity check too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jal_deploy.atomic import atomic_path, write_bytes, write_text
from jal_deploy.backends.trt_backend import gpu_name, sidecar_path
from jal_deploy.modelinfo import ModelInfo

INSTALL_HINT = ("TensorRT is not importable here: on a machine with an NVIDIA GPU, `pip install 'jal-deploy[trt]'` "
                "(the tensorrt wheels come from NVIDIA's package index) and a CUDA build of torch")


class TensorRTUnavailable(RuntimeError):
    """No TensorRT module or no usable GPU: the message says what to install."""


@dataclass
class EngineShapes:
    """(batch, height, width) for the optimisation profile."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    @classmethod
    def parse(cls, text: str) -> "EngineShapes":
        """'1x256x512:1x512x1024:4x1024x2048' (batch x height x width, min:opt:max)."""
        try:
            triples = [tuple(int(v) for v in part.lower().split("x")) for part in text.split(":")]
        except ValueError:
            raise ValueError(f"expected MIN:OPT:MAX as BxHxW triples, got {text!r}") from None
        if len(triples) != 3 or any(len(t) != 3 for t in triples):
            raise ValueError(f"expected MIN:OPT:MAX as BxHxW triples, got {text!r}")
        lo, opt, hi = triples
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise ValueError(f"profile must satisfy min <= opt <= max in every dimension, got {text!r}")
        return cls(lo, opt, hi)

    @classmethod
    def for_model(cls, info: ModelInfo, max_batch: int = 8) -> "EngineShapes":
        w, h = info.input_size
        if not info.dynamic:
            return cls((1, h, w), (1, h, w), (1, h, w))
        return cls((1, h // 2, w // 2), (1, h, w), (max_batch, h * 2, w * 2))


def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError:
        raise TensorRTUnavailable(INSTALL_HINT) from None
    return trt


def strongly_typed_only(trt) -> bool:
    """TensorRT 11 removed the FP16/INT8 builder flags: precision must come from the ONNX graph."""
    return not hasattr(trt.BuilderFlag, "FP16")


def _nhwc(info: ModelInfo, bhw: tuple[int, int, int]) -> tuple[int, ...]:
    b, h, w = bhw
    return (b, h, w, 3) if info.input_format == "uint8_bgr_nhwc" else (b, 3, h, w)


class _EntropyCalibrator:
    """TensorRT 10 int8 calibrator over target frames; device memory through torch's CUDA allocator."""

    def __init__(self, trt, frames: list[np.ndarray], cache: Path):
        import torch

        base = trt.IInt8EntropyCalibrator2
        outer = self

        class Calibrator(base):  # TensorRT requires a subclass of its own class
            def __init__(self):
                base.__init__(self)

            def get_batch_size(self):
                return 1

            def get_batch(self, names):
                if not outer.frames:
                    return None
                outer.current = torch.from_numpy(outer.frames.pop(0)).cuda()
                return [int(outer.current.data_ptr())]

            def read_calibration_cache(self):
                return cache.read_bytes() if cache.is_file() else None

            def write_calibration_cache(self, data):
                write_bytes(cache, bytes(data))

        self.frames, self.current = list(frames), None
        self.calibrator = Calibrator()


def build_engine(onnx_path: str | Path, engine_path: str | Path, info: ModelInfo, precision: str,
                 shapes: EngineShapes | None = None, workspace_gib: float = 4.0,
                 timing_cache: str | Path | None = None, calibration: list[np.ndarray] | None = None,
                 version_compatible: bool = False, hardware_compatible: bool = False) -> Path:
    """Build and atomically write an engine from `onnx_path` (on TensorRT 11, pass the fp16 / Q/DQ ONNX for
    fp16 / int8). Writes `<engine>.json` next to it. Raises TensorRTUnavailable without TensorRT or a GPU."""
    trt = import_tensorrt()
    shapes = shapes or EngineShapes.for_model(info)
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except Exception as e:  # "CUDA initialization failure" on machines without a GPU
        raise TensorRTUnavailable(f"TensorRT could not start a builder ({e}): it needs an NVIDIA GPU") from None
    typed = strongly_typed_only(trt)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    profile = builder.create_optimization_profile()
    profile.set_shape(info.input_name, _nhwc(info, shapes.min), _nhwc(info, shapes.opt), _nhwc(info, shapes.max))
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if not typed:
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # int8 engines keep non-quantised layers in fp16
        if precision == "int8":
            if not calibration:
                raise ValueError("a TensorRT 10 int8 engine needs calibration frames")
            config.set_flag(trt.BuilderFlag.INT8)
            calib = _EntropyCalibrator(trt, calibration, Path(str(engine_path) + ".calib"))
            config.int8_calibrator = calib.calibrator
            config.set_calibration_profile(profile)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a {precision} engine from {onnx_path} (see its log above)")
    engine_path = Path(engine_path)
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    if cache_path:
        write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    write_text(sidecar_path(engine_path), json.dumps(
        {"model_info": json.loads(info.to_json()), "precision": precision, "tensorrt": trt.__version__,
         "gpu": gpu_name(), "strongly_typed": typed, "version_compatible": version_compatible,
         "hardware_compatible": hardware_compatible,
         "profile": {"min": shapes.min, "opt": shapes.opt, "max": shapes.max}}, indent=2))
    return engine_path
