"""Inference backends, chosen from the artefact's suffix: ONNX Runtime (`.onnx`), TensorRT (`.engine`/`.plan`
with its JSON sidecar) and torch (`.pt2`). Each imports its framework only when opened, so `jal_deploy`
never pulls torch in unless the torch backend is asked for."""
from __future__ import annotations

from pathlib import Path

from .base import Backend, BackendError

SUFFIXES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".pt2": "torch"}
BACKENDS = ("onnxruntime", "tensorrt", "torch")
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")  # torch backend only: autocast dtype

__all__ = ["BACKENDS", "DEVICES", "PRECISIONS", "Backend", "BackendError", "backend_for", "open_backend"]


def backend_for(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise BackendError(f"{path}: unknown model type {suffix or '(no suffix)'}; expected one of "
                           f"{', '.join(sorted(SUFFIXES))} (see `jal-export --help`)")
    return SUFFIXES[suffix]


def open_backend(path: str | Path, device: str = "auto", backend: str | None = None, precision: str = "fp32",
                 threads: int | None = None) -> Backend:
    """Load `path` with `backend` (default: from the suffix) on `device` and check it really runs there.

    device: auto (a GPU when the backend has one, else CPU), cpu, cuda, or tensorrt (ONNX Runtime's TensorRT
    provider). An explicit device that cannot be honoured is an error, never a silent CPU fallback.
    """
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"model {path} does not exist" if not path.exists() else f"model {path} is not a file")
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    name = backend or backend_for(path)
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if precision != "fp32" and name != "torch":
        raise BackendError(f"--precision {precision} applies to the torch backend; ONNX and TensorRT artefacts "
                           f"carry their precision (export an fp16 ONNX / engine with jal-export)")
    if name == "onnxruntime":
        from .ort_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(path, device=device, threads=threads)
    if name == "tensorrt":
        if device not in ("auto", "cuda"):
            raise BackendError(f"a TensorRT engine runs on its GPU only, not on device {device!r}")
        from .trt_backend import TensorRTBackend
        return TensorRTBackend(path)
    if device == "tensorrt":
        raise BackendError("device 'tensorrt' is ONNX Runtime's TensorRT provider: pass an .onnx model")
    from .torch_backend import TorchBackend
    return TorchBackend(path, device=device, precision=precision, threads=threads)
