"""torch backend for `.pt2` programs (torch.export): for users without ONNX Runtime, and for fp16/bf16 on
GPUs through autocast. torch is imported here only, when this backend is chosen."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from jal_deploy.modelinfo import ModelInfo, ModelInfoError

from .base import Backend, BackendError

EXTRA_FILE = "model_info.json"  # ModelInfo inside a .pt2 (export/torch_program.py writes it under this name)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: str | Path, device: str = "auto", precision: str = "fp32", threads: int | None = None):
        super().__init__()
        try:
            import torch
        except ImportError:
            raise BackendError("the .pt2 backend needs torch (pip install torch); or use the .onnx artefact") from None
        self.torch, self.path = torch, Path(path)
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("device cuda was asked for but torch sees no CUDA GPU "
                               f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None})")
        self.device = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        if precision == "fp16" and self.device == "cpu":
            raise BackendError("fp16 autocast needs a GPU; use bf16 or fp32 on CPU")
        if threads:
            torch.set_num_threads(threads)
        extra = {EXTRA_FILE: ""}
        try:
            program = torch.export.load(str(self.path), extra_files=extra)
        except Exception as e:
            raise BackendError(f"torch cannot load {self.path} as a torch.export program: {str(e)[:300]}") from None
        try:
            self.info = ModelInfo.from_json(extra[EXTRA_FILE] or "null")
        except (ModelInfoError, TypeError) as e:
            raise BackendError(f"{self.path} carries no jal-deploy model metadata ({e}): export it with jal-export")
        self.module = program.module().to(self.device)
        if self.device == "cuda":
            # NHWC frames permuted to NCHW are channels-last in memory already; channels-last weights keep
            # cuDNN on its tensor-core NHWC kernels, and benchmark mode picks them once per input size.
            self.module = self.module.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self.precision = precision
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device, dtype=self.dtype)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        try:
            with torch.inference_mode(), self._autocast():
                out = self.module(x)
        except Exception as e:  # torch.export guards (batch/size outside the declared range) raise here
            raise self.shape_error(batch, e) from None
        if out.is_floating_point():
            out = out.float()
        return out.cpu().numpy()

    def describe(self) -> str:
        return f"torch {self.torch.__version__} on {self.device} ({self.precision} {'autocast' if self.dtype else ''})".strip()
