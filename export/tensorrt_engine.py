"""TensorRT engines from the exported ONNX graphs, for TensorRT 10 and 11 (chosen by feature detection).

- Precision: fp32 from the fp32 ONNX with TF32 cleared (TensorRT enables it by default). fp16: TensorRT 10
  builds the fp32 ONNX with the FP16 flag; TensorRT 11 (always strongly typed, no precision flags) builds
  the fp16 ONNX. int8: both build the TensorRT Q/DQ ONNX (explicit quantisation: the scales are the ones
  whose parity was checked on CPU, and no deprecated calibrator is needed); TensorRT 10 can still calibrate
  the fp32 ONNX with its entropy calibrator on request (`calibrator=True`).
- A workspace limit, one optimisation profile, a persistent timing cache (a cache TensorRT refuses, e.g.
  from another GPU, is replaced by a fresh one with a warning), optional version-/hardware-compatible
  builds, and a JSON sidecar (`<engine>.json`) with `ModelInfo`, the profile, the TensorRT version, the GPU
  and its compute capability. The sidecar is written before the engine, so an engine never lacks one.
- Deprecated API (precision flags since 10.12, calibrators since 10.1) is used only where TensorRT still
  has it, with its DeprecationWarnings silenced; TensorRT's own log reaches `log` without deprecation chatter.
The runtime's `TensorRTBackend` (jal_deploy.backends) runs the engines, for the parity check too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jal_deploy.atomic import atomic_path, write_bytes, write_text
from jal_deploy.backends.base import InputRange, default_profile, tensor_shape
from jal_deploy.backends.trt_backend import device_properties, sidecar_path
from jal_deploy.modelinfo import ModelInfo

INSTALL_HINT = ("TensorRT is not importable here: on a machine with an NVIDIA GPU, `pip install "
                "'jal-deploy[trt-cu12]'` (or `[trt-cu13]` where nvidia-smi reports CUDA 13; the tensorrt wheels "
                "download their libraries from NVIDIA's index) and a CUDA build of torch")


class TensorRTUnavailable(RuntimeError):
    """No TensorRT module or no usable GPU: the message says what to install."""


class EngineBuildError(RuntimeError):
    """TensorRT refused the graph or the build; the message carries TensorRT's own errors."""


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
        return cls(*default_profile(info, max_batch))

    def text(self) -> str:
        return ":".join("x".join(map(str, t)) for t in (self.min, self.opt, self.max))

    def outside(self, frames) -> list[tuple[int, int]]:
        """(height, width) of the (1, H, W, 3) frames this profile cannot run, e.g. parity frames."""
        rng = InputRange.from_profile(self.min, self.opt, self.max)
        return sorted({f.shape[1:3] for f in frames if not rng.contains(f.shape[0], *f.shape[1:3])})


def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError:
        raise TensorRTUnavailable(INSTALL_HINT) from None
    return trt


def strongly_typed_only(trt) -> bool:
    """TensorRT 11 removed the FP16/INT8 builder flags: precision must come from the ONNX graph."""
    return not hasattr(trt.BuilderFlag, "FP16")


def has_calibrator(trt) -> bool:
    return hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(trt.BuilderFlag, "INT8")


@contextlib.contextmanager
def quiet():
    """Silence the DeprecationWarnings of API this module uses only where TensorRT still offers it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_logger(trt, log=print):
    """A TensorRT logger that keeps errors (for the exception) and forwards warnings, minus deprecations."""
    severity = trt.ILogger.Severity

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level, msg):
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(str(msg))
            elif level == severity.WARNING and "deprecat" not in str(msg).lower():
                log(f"TensorRT: {msg}")

    return Logger()


class EntropyCalibrator:
    """TensorRT 10's int8 entropy calibrator over target frames already in the graph's input format.

    TensorRT reads an exception in `get_batch` as "no more batches", so it is kept in `error` and
    re-raised by `build_engine` after the build. The cache file starts with the ONNX file's sha256: a
    cache written for another graph is ignored (and rewritten), never silently reused."""

    def __init__(self, trt, frames: list[np.ndarray], cache: Path, onnx_sha256: str, to_device=None, log=print):
        self.frames, self.cache, self.log = list(frames), Path(cache), log
        self.header = f"jal-deploy int8 calibration for onnx sha256 {onnx_sha256}\n".encode()
        self.to_device = to_device or _torch_to_device
        self.error: BaseException | None = None
        self.current = None  # keeps the device copy of the current frame alive while TensorRT reads it
        base, outer = trt.IInt8EntropyCalibrator2, self

        class Calibrator(base):  # TensorRT requires a subclass of its own class
            def __init__(self):
                base.__init__(self)

            def get_batch_size(self):
                return 1

            def get_batch(self, names):
                return outer.get_batch(names)

            def read_calibration_cache(self):
                return outer.read_cache()

            def write_calibration_cache(self, data):
                outer.write_cache(data)

        with quiet():
            self.calibrator = Calibrator()

    def get_batch(self, names):
        try:
            if not self.frames:
                return None
            self.current, pointer = self.to_device(np.ascontiguousarray(self.frames.pop(0)))
            return [int(pointer)]
        except Exception as e:  # noqa: BLE001 - re-raised after the build
            self.error, self.frames = e, []
            return None

    def read_cache(self):
        if not self.cache.is_file():
            return None
        data = self.cache.read_bytes()
        if not data.startswith(self.header):
            self.log(f"{self.cache} was written for another ONNX graph: calibrating again")
            return None
        return data[len(self.header):]

    def write_cache(self, data) -> None:
        write_bytes(self.cache, self.header + bytes(data))


def _torch_to_device(frame: np.ndarray):
    import torch
    tensor = torch.from_numpy(frame).cuda()
    return tensor, tensor.data_ptr()


def calibration_cache_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".calib")


def _attach_timing_cache(config, path: Path | None, log):
    """Attach the timing cache at `path` (or a fresh one). TensorRT refuses a cache from another GPU or
    version (set_timing_cache returns False): warn and build with a fresh cache instead."""
    data = path.read_bytes() if path and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if data:
        log(f"warning: TensorRT refused the timing cache {path} (another GPU or TensorRT version?); "
            f"building with a fresh one, which replaces it")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log("warning: TensorRT could not create a timing cache; building without one")
        return None
    return cache


def _save_timing_cache(config, path: Path | None, log) -> None:
    if path is None:
        return
    cache = config.get_timing_cache()  # None when no cache is attached
    if cache is None:
        log(f"warning: no timing cache to save to {path}")
        return
    try:
        write_bytes(path, bytes(cache.serialize()))
    except Exception as e:  # noqa: BLE001 - the engine is already good; the cache only saves time
        log(f"warning: could not save the timing cache {path} ({e})")


def _set_precision(trt, config, precision: str, typed: bool, tf32: bool) -> bool:
    """Builder flags for `precision`; returns whether TF32 stays allowed for float32 layers."""
    with quiet():
        if not typed and precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # int8 engines keep non-quantised layers in fp16
        if not typed and precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ and calibrated networks both need it on TensorRT 10
    if precision == "fp32" and not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: an "fp32" engine would compute in TF32
    return bool(config.get_flag(trt.BuilderFlag.TF32))


def _hardware_level(trt, config, hardware_compatible: bool) -> str | bool:
    if not hardware_compatible:
        return False
    config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    return "ampere_plus"


def _parse(trt, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        raise EngineBuildError(f"TensorRT could not parse {onnx_path.name}: {'; '.join(errors) or 'no reason given'}")


def build_engine(onnx_path: str | Path, engine_path: str | Path, info: ModelInfo, precision: str,
                 shapes: EngineShapes | None = None, workspace_gib: float = 4.0,
                 timing_cache: str | Path | None = None, calibration: list[np.ndarray] | None = None,
                 version_compatible: bool = False, hardware_compatible: bool = False, tf32: bool = False,
                 log=print, to_device=None) -> Path:
    """Build `engine_path` from `onnx_path` (the graph whose precision the engine gets: see the module doc)
    and its sidecar. `calibration` (frames in the graph's input format) selects TensorRT 10's entropy
    calibrator for int8. Raises TensorRTUnavailable without TensorRT or a GPU, EngineBuildError when
    TensorRT refuses the graph or the build."""
    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    shapes = shapes or EngineShapes.for_model(info)
    typed = strongly_typed_only(trt)
    if calibration is not None and not has_calibrator(trt):
        raise EngineBuildError(f"TensorRT {trt.__version__} has no int8 calibrator: build int8 from the Q/DQ ONNX")
    logger = make_logger(trt, log)
    try:
        builder = trt.Builder(logger)
    except Exception as e:  # "CUDA initialization failure" on machines without a GPU
        raise TensorRTUnavailable(f"TensorRT could not start a builder ({e}): it needs an NVIDIA GPU") from None
    if builder is None:
        raise TensorRTUnavailable("TensorRT could not start a builder: it needs an NVIDIA GPU")
    # Flags 0: explicit batch is the default since TensorRT 10 and every network is strongly typed in 11
    # (its STRONGLY_TYPED flag is deprecated); on 10 the builder flags below set the precision.
    network = builder.create_network(0)
    _parse(trt, network, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    profile = builder.create_optimization_profile()
    profile.set_shape(info.input_name, *(tensor_shape(info, s) for s in (shapes.min, shapes.opt, shapes.max)))
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    timing = _attach_timing_cache(config, cache_path, log)  # noqa: F841 - must outlive the build
    tf32_on = _set_precision(trt, config, precision, typed, tf32)
    onnx_sha = file_sha256(onnx_path)
    calibrator = None
    if calibration is not None:
        calibrator = EntropyCalibrator(trt, calibration, calibration_cache_path(engine_path), onnx_sha,
                                       to_device=to_device, log=log)
        with quiet():
            config.int8_calibrator = calibrator.calibrator
            config.set_calibration_profile(profile)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    level = _hardware_level(trt, config, hardware_compatible)
    with quiet():
        serialized = builder.build_serialized_network(network, config)
    if calibrator is not None and calibrator.error is not None:
        raise EngineBuildError(f"int8 calibration failed: {calibrator.error!r}") from calibrator.error
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build a {precision} engine from {onnx_path.name}: "
                               f"{'; '.join(logger.errors) or 'see its log above'}")
    sidecar = {"model_info": json.loads(info.to_json()), "precision": precision, "tf32": tf32_on,
               "int8": ("calibrator" if calibrator else "qdq") if precision == "int8" else None,
               "onnx": onnx_path.name, "onnx_sha256": onnx_sha, "tensorrt": trt.__version__,
               **device_properties(), "strongly_typed": typed, "version_compatible": version_compatible,
               "hardware_compatible": level,
               "profile": {"min": list(shapes.min), "opt": list(shapes.opt), "max": list(shapes.max)}}
    write_engine(engine_path, bytes(serialized), sidecar)
    _save_timing_cache(config, cache_path, log)
    return engine_path


def write_engine(engine_path: Path, plan: bytes, sidecar: dict) -> None:
    """Sidecar first, then the engine, each atomically: an engine never exists without its sidecar (a
    failed engine write takes the new sidecar away again)."""
    side = sidecar_path(engine_path)
    write_text(side, json.dumps(sidecar, indent=2))
    try:
        with atomic_path(engine_path) as tmp:
            tmp.write_bytes(plan)
    except BaseException:
        side.unlink(missing_ok=True)
        raise
