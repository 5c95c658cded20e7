"""The torch backend's per-shape state and its host<->device traffic: CUDA graphs captured once per
(batch, height, width), pinned host buffers, and copies on side streams so that transfers overlap compute.

Only the torch backend imports this module, and only it passes torch in; `ShapeCache` and `Pending` need no
CUDA, so their logic is tested on CPU.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


class ShapeCache:
    """Entries built on first use of a key ((batch, height, width)), at most `limit` of them: a CUDA graph holds
    its input, output and a memory pool, and torch.compile recompiles for every shape, so a stream of ever new
    sizes must not grow either without bound. A key past the limit gets None (run without an entry)."""

    def __init__(self, build: Callable, limit: int):
        self.build, self.limit = build, limit
        self.entries: dict = {}
        self.refused: set = set()

    def get(self, key, *args):
        """The entry of `key`, built as `build(key, *args)` the first time."""
        if key in self.entries:
            return self.entries[key]
        if len(self.entries) >= self.limit:
            self.refused.add(key)
            return None
        entry = self.entries[key] = self.build(key, *args)
        return entry

    def __contains__(self, key) -> bool:
        return key in self.entries


class Graph:
    """One CUDA graph of `fn` at one input shape. Capture runs `fn` twice on a side stream first (cuDNN's
    benchmark and the allocator settle outside the capture). Every graph of a backend shares one memory pool:
    they replay one at a time on one stream, and each graph's own input and output stay allocated."""

    def __init__(self, torch, fn: Callable, example, pool):
        self.input = example.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn(self.input)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = fn(self.input)

    def __call__(self, x):
        """The output is overwritten by the next replay, so it is cloned (on the same stream, before it)."""
        self.input.copy_(x)
        self.graph.replay()
        return self.output.clone()


class Pending:
    """A batch whose result may still be on its way back: `result()` waits for it once and keeps it."""

    def __init__(self, value=None, event=None, host=None):
        self._value, self._event, self._host = value, event, host

    def result(self) -> np.ndarray:
        if self._value is None:
            self._event.synchronize()
            self._value = self._host.numpy().copy()  # the pinned buffer is reused two batches later
            self._event = self._host = None
        return self._value


class Transfers:
    """Pinned host buffers, two per (shape, dtype), and one stream each way. Uploads run on their stream and the
    compute stream waits for them by event, so batch k+1 travels while batch k computes; results come back on the
    download stream into pinned buffers. Before a buffer is reused, what it last carried is finished (an upload)
    or taken (a result)."""

    SLOTS = 2

    def __init__(self, torch, device: str):
        self.torch, self.device = torch, device
        self.up, self.down = torch.cuda.Stream(), torch.cuda.Stream()
        self.buffers: dict = {}  # (direction, shape, dtype) -> [slots, next index]

    def _slot(self, direction: str, shape, dtype):
        key = (direction, tuple(shape), dtype)
        if key not in self.buffers:
            if len(self.buffers) >= 16:  # sizes change: drop the old buffers rather than keep pinning more
                self.buffers.clear()
            self.buffers[key] = [[None] * self.SLOTS, 0]
        slots, index = self.buffers[key]
        self.buffers[key][1] = (index + 1) % self.SLOTS
        entry = slots[index]
        if entry is None:
            entry = slots[index] = {"host": self.torch.empty(tuple(shape), dtype=dtype, pin_memory=True),
                                    "busy": None}
        busy = entry["busy"]
        if isinstance(busy, Pending):
            busy.result()
        elif busy is not None:
            busy.synchronize()
        return entry

    def upload(self, batch: np.ndarray):
        """`batch` on the device, read by the current (compute) stream once its upload has landed."""
        torch = self.torch
        entry = self._slot("up", batch.shape, torch.from_numpy(batch[:0]).dtype)
        np.copyto(entry["host"].numpy(), batch)
        compute = torch.cuda.current_stream()
        with torch.cuda.stream(self.up):
            x = entry["host"].to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.up)
        entry["busy"] = done
        compute.wait_event(done)
        x.record_stream(compute)  # allocated on the upload stream, used and freed on the compute stream
        return x

    def download(self, out) -> Pending:
        torch = self.torch
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream())
        entry = self._slot("down", out.shape, out.dtype)
        with torch.cuda.stream(self.down):
            self.down.wait_event(ready)
            entry["host"].copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.down)
        out.record_stream(self.down)
        pending = entry["busy"] = Pending(event=done, host=entry["host"])
        return pending


def timed_call(torch, on_gpu: bool, fn: Callable, *args):
    """`fn(*args)` and its seconds, the device's work included."""
    start = time.perf_counter()
    out = fn(*args)
    if on_gpu:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start
