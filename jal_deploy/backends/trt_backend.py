"""TensorRT backend: a serialized engine plus its JSON sidecar (`<engine>.json`, written by jal-export).

TensorRT 10/11 tensor-name API (`set_input_shape`, `set_tensor_address`, `execute_async_v3`) with device
memory from cuda-python, so the runtime needs neither torch nor pycuda. Engines are tied to the TensorRT
version and GPU they were built on (unless built version-/hardware-compatible): the sidecar records both and
a mismatch is reported before TensorRT fails with an opaque deserialisation error.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jal_deploy.modelinfo import ModelInfo, ModelInfoError

from .base import Backend, BackendError

INSTALL_HINT = ("TensorRT is not importable here: on a machine with an NVIDIA GPU, pip install 'jal-deploy[trt]' "
                "(tensorrt and cuda-python wheels from NVIDIA's index), or run the .onnx artefact instead")


def import_cudart():
    """cuda-python's runtime module (12.8+ names it cuda.bindings.runtime, older releases cuda.cudart)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BackendError("the TensorRT backend needs cuda-python: pip install 'jal-deploy[trt]'") from None
    return cudart


def _check(cudart, result):
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


def gpu_name() -> str:
    """Name of CUDA device 0, or 'unknown' without cuda-python or a GPU (recorded in engine sidecars)."""
    try:
        cudart = import_cudart()
        props = _check(cudart, cudart.cudaGetDeviceProperties(0))
        name = props.name
        return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")
    except Exception:
        return "unknown"


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


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
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
        here = {"tensorrt": trt.__version__, "gpu": gpu_name()}
        built = {"tensorrt": meta.get("tensorrt"), "gpu": meta.get("gpu")}
        mismatch = [f"{k} {built[k]} (here: {here[k]})" for k in ("tensorrt", "gpu")
                    if built[k] and built[k] != "unknown" and built[k] != here[k]]
        portable = (meta.get("version_compatible") and mismatch and mismatch[0].startswith("tensorrt")) or \
            meta.get("hardware_compatible")
        if mismatch and not portable:
            raise BackendError(f"{self.path} was built for {' and '.join(mismatch)}: engines only run on the TensorRT "
                               f"version and GPU they were built with. Rebuild it here: jal-export CHECKPOINT --trt "
                               f"{meta.get('precision', 'fp16')}, or run the .onnx artefact")
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        if meta.get("version_compatible"):
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT {trt.__version__} could not deserialize {self.path} (corrupt, or built "
                               f"for another TensorRT version or GPU): rebuild it with jal-export --trt")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if self.info.input_name not in names or self.info.output_names[0] not in self.outputs:
            raise BackendError(f"{self.path} has tensors {names}, not the sidecar's {self.info.input_name!r} -> "
                               f"{self.info.output_names}: engine and sidecar do not belong together")
        self.stream = _check(cudart, cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)
        self.device = f"cuda ({here['gpu']})"
        self.precision = meta.get("precision", self.info.precision)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self.buffers.get(name, (0, 0))
        if nbytes > capacity:  # grow only: a video keeps one size, a folder a few
            if ptr:
                _check(self.cudart, self.cudart.cudaFree(ptr))
            ptr = _check(self.cudart, self.cudart.cudaMalloc(nbytes))
            self.buffers[name] = (ptr, nbytes)
        return int(ptr)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        trt, cudart = self.trt, self.cudart
        batch = np.ascontiguousarray(batch)
        name = self.info.input_name
        if not self.context.set_input_shape(name, tuple(batch.shape)):
            raise self.shape_error(batch, RuntimeError("outside the engine's optimisation profile "
                                                       f"{self.engine.get_tensor_profile_shape(name, 0)}"))
        src = self._buffer(name, batch.nbytes)
        self.context.set_tensor_address(name, src)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart, cudart.cudaMemcpyAsync(src, batch.ctypes.data, batch.nbytes, h2d, self.stream))
        results = {}
        for out in self.outputs:
            shape = tuple(self.context.get_tensor_shape(out))
            results[out] = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(out)))
            self.context.set_tensor_address(out, self._buffer(out, max(results[out].nbytes, 1)))
        if not self.context.execute_async_v3(int(self.stream)):
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
        for ptr, _ in self.buffers.values():
            self.cudart.cudaFree(ptr)
        self.buffers = {}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
