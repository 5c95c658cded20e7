"""torch backend for `.pt2` programs (torch.export): for users without ONNX Runtime, and for fp16/bf16 on
GPUs through autocast. torch is imported here only, when this backend is chosen."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np

from jal_deploy.modelinfo import ModelInfo, ModelInfoError

from .base import PROGRAM_SIDE_MULTIPLE, Backend, BackendError, batch_hw, export_range

EXTRA_FILE = "model_info.json"  # ModelInfo inside a .pt2 (export/torch_program.py writes it under this name)


def program_module(program, device: str):
    """The program's module on `device`. A program exported on CPU guards its inputs' device ("Tensor device
    mismatch! Expected: cpu, Got: cuda:0"): moving the weights is not enough, its device metadata moves too.
    The device is written with its index (`cuda:0`, not `cuda`): torch.compile checks those guards on fake
    tensors and compares the device strictly."""
    if device == "cuda":
        import torch
        device = f"cuda:{torch.cuda.current_device()}"
    if device != "cpu":
        from torch.export.passes import move_to_device_pass
        program = move_to_device_pass(program, device)
    return program.module().to(device)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: str | Path, device: str = "auto", precision: str = "fp32", threads: int | None = None,
                 channels_last: bool = True, cudnn_benchmark: bool = True, cuda_graphs: bool = False,
                 compile_mode: str | None = None):
        """GPU speed options (ignored on CPU), measured one by one by bench/runtime_gpu.py: channels-last
        weights, cuDNN benchmark mode, CUDA graphs (one graph per input shape, replayed) and torch.compile
        (`compile_mode`: 'default', 'max-autotune-no-cudagraphs', ...)."""
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
        if self.info.dynamic:
            self.accepts = dataclasses.replace(export_range(self.info), multiple=PROGRAM_SIDE_MULTIPLE)
        self.module = program_module(program, self.device)
        on_gpu = self.device == "cuda"
        if on_gpu and channels_last:
            # NHWC frames permuted to NCHW are channels-last in memory already; channels-last weights keep
            # cuDNN on its tensor-core NHWC kernels.
            self.module = self.module.to(memory_format=torch.channels_last)
        if on_gpu:
            torch.backends.cudnn.benchmark = cudnn_benchmark  # picks the fastest kernels once per input size
        if compile_mode:
            self.module = torch.compile(self.module, mode=compile_mode, dynamic=False)
        self.precision = precision
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self.graphs: dict | None = {} if (on_gpu and cuda_graphs) else None  # (shape, dtype) -> (graph, in, out)

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device, dtype=self.dtype)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        try:
            with torch.inference_mode(), self._autocast():
                out = self.module(x) if self.graphs is None else self._replay(x)
        except Exception as e:
            # torch.export's guards raise here for a batch or size outside the declared range; anything else
            # (out of memory, a compile or CUDA-graph failure) is not about the shape and keeps its own message
            if not self._fits(batch):
                raise self.shape_error(batch, e) from None
            raise
        if out.is_floating_point():
            out = out.float()
        return out.cpu().numpy()

    def _fits(self, batch: np.ndarray) -> bool:
        """Whether `batch` has the rank, dtype and a shape inside the range the program was exported for."""
        dtype = np.uint8 if self.info.input_format == "uint8_bgr_nhwc" else np.float32
        return (batch.ndim == 4 and batch.dtype == dtype
                and self.input_range().contains(*batch_hw(self.info, batch.shape)))

    def _replay(self, x):
        """Run through a CUDA graph captured for this input shape: one launch instead of hundreds of kernels,
        which is what batch 1 is bound by. The output tensor is reused by the next call, so it is cloned."""
        torch = self.torch
        key = (tuple(x.shape), x.dtype)
        if key not in self.graphs:
            static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm up (cuDNN benchmark, allocator) outside the capture
                    self.module(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.module(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def describe(self) -> str:
        return f"torch {self.torch.__version__} on {self.device} ({self.precision} {'autocast' if self.dtype else ''})".strip()
