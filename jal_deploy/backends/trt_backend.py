"""TensorRT backend: a serialized engine plus its JSON sidecar (`<engine>.json`, written by jal-export).

TensorRT 10/11 tensor-name API (`set_input_shape`, `set_tensor_address`, `execute_async_v3`) with device
memory from cuda-python, so the runtime needs neither torch nor pycuda. Engines are tied to the TensorRT
version and GPU they were built on (unless built version-/hardware-compatible): the sidecar records both and
a mismatch is reported before TensorRT fails with an opaque deserialisation error.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

from jal_deploy.modelinfo import ModelInfo, ModelInfoError

from .base import Backend, BackendError, InputRange, batch_hw, export_range

INSTALL_HINT = ("TensorRT is not importable here: on a machine with an NVIDIA GPU, pip install 'jal-deploy[trt-cu12]' "
                "(or 'jal-deploy[trt-cu13]' where nvidia-smi reports CUDA 13), or run the .onnx artefact instead")


def import_cudart():
    """cuda-python's runtime module (12.8+ names it cuda.bindings.runtime, older releases cuda.cudart)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BackendError("the TensorRT backend needs cuda-python: pip install 'jal-deploy[trt-cu12]' "
                               "(or [trt-cu13] for a CUDA 13 driver)") from None
    return cudart


def _check(cudart, result):
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


def device_properties() -> dict:
    """Name and compute capability ('major.minor') of the current CUDA device, 'unknown' where cuda-python or a
    GPU is missing. Recorded in engine sidecars and compared when an engine is loaded."""
    try:
        cudart = import_cudart()
        device = _check(cudart, cudart.cudaGetDevice())
        props = _check(cudart, cudart.cudaGetDeviceProperties(device))
        name = props.name
        name = (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).split("\x00")[0].strip()
        return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}"}
    except Exception:
        return {"gpu": "unknown", "compute_capability": "unknown"}


def gpu_name() -> str:
    return device_properties()["gpu"]


def _version(text) -> tuple[int, ...]:
    """'10.16.1.11' -> (10, 16, 1): TensorRT ties a plan to major.minor.patch."""
    return tuple(int(v) for v in re.findall(r"\d+", str(text))[:3])


def _capability(text) -> tuple[int, int] | None:
    found = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text or ""))
    return (int(found[1]), int(found[2])) if found else None


def compatibility(built: dict, here: dict) -> tuple[list[str], list[str]]:
    """(problems, notes) for running an engine whose sidecar says `built` on a machine described by `here`
    (keys tensorrt, gpu, compute_capability). Checks what TensorRT itself checks: the TensorRT version
    (exact major.minor.patch, or same major and not older for a version-compatible engine) and the GPU's
    compute capability (equal, or Ampere (8.0) and newer for an AMPERE_PLUS hardware-compatible engine).
    Both checks always run; a different GPU name with the same compute capability is only a note."""
    problems, notes = [], []
    b_ver, h_ver = _version(built.get("tensorrt") or ""), _version(here.get("tensorrt") or "")
    if b_ver and h_ver:
        if built.get("version_compatible"):
            if b_ver[0] != h_ver[0] or h_ver < b_ver:
                problems.append(f"TensorRT {built['tensorrt']} (a version-compatible engine runs on that version "
                                f"and later {b_ver[0]}.x releases; here: {here['tensorrt']})")
        elif b_ver != h_ver:
            problems.append(f"TensorRT {built['tensorrt']} (here: {here['tensorrt']})")
    level = built.get("hardware_compatible") or "none"
    level = "ampere_plus" if level is True else str(level).lower()
    b_cc, h_cc = _capability(built.get("compute_capability")), _capability(here.get("compute_capability"))
    b_gpu, h_gpu = built.get("gpu") or "unknown", here.get("gpu") or "unknown"
    if h_cc is None:
        notes.append("the GPU here could not be queried, so the engine's GPU was not checked")
    elif level == "ampere_plus":
        if h_cc < (8, 0):
            problems.append(f"Ampere or newer GPUs (hardware-compatible engine; here: {h_gpu}, compute capability "
                            f"{h_cc[0]}.{h_cc[1]})")
    elif b_cc is not None:
        if b_cc != h_cc:
            problems.append(f"GPUs of compute capability {b_cc[0]}.{b_cc[1]} ({b_gpu}; here: {h_gpu}, "
                            f"{h_cc[0]}.{h_cc[1]})")
        elif b_gpu != h_gpu and "unknown" not in (b_gpu, h_gpu) and level != "same_compute_capability":
            notes.append(f"engine built on {b_gpu}, running on {h_gpu} (same compute capability "
                         f"{h_cc[0]}.{h_cc[1]}): it runs, but rebuilding it here may be faster")
    elif b_gpu != "unknown" and h_gpu != "unknown" and b_gpu != h_gpu:  # sidecars written before compute capability
        problems.append(f"the GPU {b_gpu} (here: {h_gpu})")
    return problems, notes


def sidecar_path(engine: str | Path) -> Path:
    """`model.fp16.engine` -> `model.fp16.engine.json` (written by jal-export, read here)."""
    engine = Path(engine)
    return engine.with_suffix(engine.suffix + ".json")


def read_sidecar(engine: Path) -> dict:
    sidecar = sidecar_path(engine)
    if not sidecar.is_file():
        raise BackendError(f"{engine} has no sidecar {sidecar.name}: jal-export writes it next to the engine "
                           f"(it holds the classes, palette and normalisation the engine itself lacks)")
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise BackendError(f"{sidecar} is not valid JSON ({e})") from None


def _stream_handle(stream) -> int:
    """The raw cudaStream_t value that execute_async_v3 takes (int() on cuda-python's handle object)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return int(stream)


def _engine_range(engine, info: ModelInfo, meta: dict) -> InputRange:
    """The input's optimisation profile 0, from the engine itself; the sidecar's copy where the engine's
    query fails."""
    try:
        lo, opt, hi = (batch_hw(info, d) for d in engine.get_tensor_profile_shape(info.input_name, 0))
        return InputRange.from_profile(lo, opt, hi)
    except Exception:
        profile = meta.get("profile")
        if profile:
            return InputRange.from_profile(profile["min"], profile["opt"], profile["max"])
        return export_range(info)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)
        self.stream = None
        meta = read_sidecar(self.path)
        try:
            self.info = ModelInfo.from_json(json.dumps(meta.get("model_info")))
        except ModelInfoError as e:
            raise BackendError(f"{self.path}: {e}") from None
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendError(INSTALL_HINT) from None
        cudart = import_cudart()
        self.trt, self.cudart = trt, cudart
        here = {"tensorrt": trt.__version__, **device_properties()}
        problems, notes = compatibility(meta, here)
        if problems:
            raise BackendError(f"{self.path} was built for {' and '.join(problems)}: an engine only runs where "
                               f"TensorRT accepts it. Rebuild it here: jal-export CHECKPOINT --trt "
                               f"{meta.get('precision', 'fp16')}, or run the .onnx artefact")
        self.notes.extend(notes)
        self.engine = self._deserialize(trt, meta)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"TensorRT could not create an execution context for {self.path} (out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if self.info.input_name not in names or self.info.output_names[0] not in self.outputs:
            raise BackendError(f"{self.path} has tensors {names}, not the sidecar's {self.info.input_name!r} -> "
                               f"{self.info.output_names}: engine and sidecar do not belong together")
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.info.input_name)))
        self.accepts = _engine_range(self.engine, self.info, meta)
        self.stream = _check(cudart, cudart.cudaStreamCreate())
        self.device = f"cuda ({here['gpu']})"
        self.precision = meta.get("precision", self.info.precision)

    def _deserialize(self, trt, meta: dict):
        logger = trt.Logger(trt.Logger.WARNING)
        try:
            self.runtime = trt.Runtime(logger)
        except Exception as e:  # pybind raises TypeError when createInferRuntime returns nullptr
            raise BackendError(f"TensorRT {trt.__version__} could not start its runtime ({e}): it needs an NVIDIA "
                               f"GPU with a driver for the CUDA version of this TensorRT build") from None
        if self.runtime is None:
            raise BackendError(f"TensorRT {trt.__version__} could not start its runtime: no usable NVIDIA GPU")
        if meta.get("version_compatible"):
            self.runtime.engine_host_code_allowed = True  # the lean runtime embedded in the plan
        engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise BackendError(f"TensorRT {trt.__version__} could not deserialize {self.path} (corrupt, or built "
                               f"for another TensorRT version or GPU): rebuild it with jal-export --trt")
        return engine

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self.buffers.get(name, (0, 0))
        if nbytes > capacity:  # grow only: a video keeps one size, a folder a few
            if ptr:
                _check(self.cudart, self.cudart.cudaFree(ptr))
            ptr = _check(self.cudart, self.cudart.cudaMalloc(nbytes))
            self.buffers[name] = (ptr, nbytes)
        return int(ptr)

    def _check_input(self, batch: np.ndarray) -> None:
        """Refuse what the engine cannot take with the reason, before TensorRT logs an opaque error."""
        if batch.dtype != self.input_dtype:
            raise BackendError(f"{self.path} takes {self.input_dtype} input ({self.info.input_format}), "
                               f"got {batch.dtype}")
        if batch.ndim != 4 or not self.accepts.contains(*batch_hw(self.info, batch.shape)):
            raise self.shape_error(batch, RuntimeError("outside the engine's optimisation profile"))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        trt, cudart = self.trt, self.cudart
        batch = np.ascontiguousarray(batch)
        self._check_input(batch)
        name = self.info.input_name
        if not self.context.set_input_shape(name, tuple(batch.shape)):
            raise self.shape_error(batch, RuntimeError("TensorRT refused the shape"))
        src = self._buffer(name, batch.nbytes)
        self.context.set_tensor_address(name, src)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart, cudart.cudaMemcpyAsync(src, batch.ctypes.data, batch.nbytes, h2d, self.stream))
        results = {}
        for out in self.outputs:
            shape = tuple(self.context.get_tensor_shape(out))
            results[out] = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(out)))
            self.context.set_tensor_address(out, self._buffer(out, max(results[out].nbytes, 1)))
        if not self.context.execute_async_v3(_stream_handle(self.stream)):
            raise BackendError(f"TensorRT failed to run {self.path} (see its log above)")
        for out, host in results.items():
            _check(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self.buffers[out][0], host.nbytes, d2h,
                                                  self.stream))
        _check(cudart, cudart.cudaStreamSynchronize(self.stream))
        out = results[self.info.output_names[0]]
        return out.astype(np.float32) if out.dtype == np.float16 else out

    def describe(self) -> str:
        return f"tensorrt {self.trt.__version__} on {self.device} ({self.precision} engine)"

    def close(self) -> None:
        """Free the device buffers and destroy the CUDA stream (safe to call twice)."""
        buffers, self.buffers = getattr(self, "buffers", {}), {}
        for ptr, _ in buffers.values():
            self.cudart.cudaFree(ptr)
        stream, self.stream = getattr(self, "stream", None), None
        if stream is not None:
            self.cudart.cudaStreamDestroy(stream)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
