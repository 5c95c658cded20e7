"""torch backend for `.pt2` programs (torch.export): for users without ONNX Runtime, and the fast path on NVIDIA
GPUs without TensorRT: autocast fp16/bf16, torch.compile with frozen weights, one CUDA graph per input shape,
pinned and overlapped transfers (`TorchOptions`, all on by default on CUDA). torch is imported here only, when
this backend is chosen."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from jal_deploy.modelinfo import ModelInfo, ModelInfoError

from .base import PROGRAM_SIDE_MULTIPLE, Backend, BackendError, batch_hw, export_range
from .torch_cuda import Graph, Pending, ShapeCache, Transfers, timed_call
from .torch_options import OptionsError, TorchOptions, use_compile_cache

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


def _compile_failure(error: Exception) -> bool:
    """Whether `error` is torch.compile failing (no C++ compiler or Triton, an inductor bug), not the model."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InductorError
    return isinstance(error, (BackendCompilerFailed, InductorError))


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: str | Path, device: str = "auto", precision: str = "fp32", threads: int | None = None,
                 options: TorchOptions | str | None = None):
        """options: a `TorchOptions`, its text form (`"compile=max-autotune,graphs=off"`) over the device's
        defaults, or None for the device's defaults with $JAL_TORCH_OPTIONS applied."""
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
        self.options = self._options(options)
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
        self.precision = precision
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self.module = self._prepare(program_module(program, self.device))
        on_gpu = self.device == "cuda"
        self.graphs = ShapeCache(self._capture, self.options.max_shapes) if self.options.graphs else None
        self.pool = torch.cuda.graph_pool_handle() if self.graphs is not None else None
        self.transfers = Transfers(torch, self.device) if on_gpu and self.options.pinned else None
        # (batch, height, width) -> seconds of its first call: compile (first run of the compiled module, which
        # compiles or loads from the cache), capture (the CUDA graph), first_call (all of it)
        self.warmups: dict[tuple[int, int, int], dict] = {}

    def _options(self, options) -> TorchOptions:
        try:
            if options is None:
                options = TorchOptions.from_env(self.device)
            elif isinstance(options, str):
                options = TorchOptions.parse(options, self.device)
            options = options.validate()
        except OptionsError as e:
            raise BackendError(str(e)) from None
        if self.device == "cpu" and options.on_cpu():
            self.notes.append(f"{', '.join(options.on_cpu())}: CUDA only, off on CPU")
            options = dataclasses.replace(options, graphs=False, pinned=False, cudnn_benchmark=False)
        return options

    def _prepare(self, module):
        torch, opts = self.torch, self.options
        self.cache_dir = None
        if opts.channels_last:
            # NHWC frames permuted to NCHW are channels-last in memory already; channels-last weights keep
            # cuDNN on its tensor-core NHWC kernels.
            module = module.to(memory_format=torch.channels_last)
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = opts.cudnn_benchmark  # the fastest kernels, searched once per size
        if opts.compile:
            self.cache_dir = use_compile_cache(opts)
            # dynamic=False: one specialised graph per input shape, as the CUDA graphs are
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, opts.max_shapes)
            module = torch.compile(module, dynamic=False, options=opts.inductor_options())
        return module

    def _autocast(self):
        """No weight-cast cache: a cast cached inside a graph capture would be freed into the shared pool when
        the autocast context ends, while the graph still reads it."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device, dtype=self.dtype, cache_enabled=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.submit(batch).result()

    def run_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs of `batches` in order, one batch ahead: batch k+1 is staged and uploaded while batch k
        computes (with pinned transfers on CUDA; on CPU this is the same as calling the backend on each)."""
        pending = None
        for batch in batches:
            ahead = self.submit(batch)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()

    def submit(self, batch: np.ndarray) -> Pending:
        """Start `batch` and return at once where the device runs asynchronously; `.result()` waits for it."""
        torch = self.torch
        try:
            with torch.inference_mode(), self._autocast():
                if self.transfers is not None:
                    x = self.transfers.upload(batch)
                else:
                    x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
                out = self.forward(x)
                if out.is_floating_point():
                    out = out.float()
                if self.transfers is not None:
                    return self.transfers.download(out)
        except Exception as e:
            # torch.export's guards raise here for a batch or size outside the declared range; anything else
            # (out of memory, a compile or CUDA-graph failure) is not about the shape and keeps its own message
            if not self._fits(batch):
                raise self.shape_error(batch, e) from None
            raise
        return Pending(value=out.cpu().numpy())

    def forward(self, x):
        """The module on a batch already on the device (inside inference mode and autocast): its CUDA graph when
        it has one, and the first call at each shape timed into `warmups`."""
        key = batch_hw(self.info, x.shape)
        if key not in self.warmups:
            return self._first_call(key, x)
        graph = self.graphs.get(key) if self.graphs is not None else None
        return graph(x) if graph is not None else self.module(x)

    def _first_call(self, key, x):
        torch, on_gpu = self.torch, self.device == "cuda"
        try:
            out, first = timed_call(torch, on_gpu, self.module, x)
        except Exception as e:
            if not (self.options.compile and _compile_failure(e)):
                raise  # a shape outside the program's range, out of memory...: the caller words it
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise BackendError(f"torch.compile failed on {self.path} at batch {key[0]}, {key[2]}x{key[1]}: {reason}. "
                               f"Run without it: JAL_TORCH_OPTIONS=compile=off") from e
        row = {"compile_s": first if self.options.compile else None, "capture_s": None}
        if self.graphs is not None:
            graph, row["capture_s"] = timed_call(self.torch, on_gpu, self.graphs.get, key, x)
            if graph is not None:
                out, replay = timed_call(self.torch, on_gpu, graph, x)
                row["capture_s"] += replay
        row["first_call_s"] = first + (row["capture_s"] or 0.0)
        self.warmups[key] = row
        return out

    def _capture(self, key, x):
        return Graph(self.torch, self.module, x, self.pool)

    def warmup(self, batch: int, height: int, width: int) -> dict:
        """Run one zero batch of this shape (compile, graph capture) and return its first-call seconds."""
        w_h = (height, width, 3) if self.info.input_format == "uint8_bgr_nhwc" else (3, height, width)
        dtype = np.uint8 if self.info.input_format == "uint8_bgr_nhwc" else np.float32
        self(np.zeros((batch, *w_h), dtype))
        return self.warmups[(batch, height, width)]

    def _fits(self, batch: np.ndarray) -> bool:
        """Whether `batch` has the rank, dtype and a shape inside the range the program was exported for."""
        dtype = np.uint8 if self.info.input_format == "uint8_bgr_nhwc" else np.float32
        return (batch.ndim == 4 and batch.dtype == dtype
                and self.input_range().contains(*batch_hw(self.info, batch.shape)))

    def describe(self) -> str:
        precision = f"{self.precision} autocast" if self.dtype else self.precision
        return f"torch {self.torch.__version__} on {self.device} ({precision}; {self.options.describe()})"
