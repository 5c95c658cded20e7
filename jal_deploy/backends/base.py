"""What every backend offers the `Segmenter`: one call from a batch in the graph's input format to its output,
and the input shapes it really accepts (`InputRange`), so the Segmenter can pick a size inside them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jal_deploy.modelinfo import ModelInfo

# Dynamic dimensions declared when a graph is exported (torch.export needs bounds; jal-export uses these).
MAX_BATCH, MIN_SIDE, MAX_SIDE = 64, 32, 4096
# Sides of a dynamic torch.export program are multiples of this (the networks' output stride): torch 2.11
# cannot prove ceil-mode pooling shape-safe for every side and refuses to export a free one.
PROGRAM_SIDE_MULTIPLE = 8


class BackendError(RuntimeError):
    """A model that cannot be loaded or run here; the message says why and what to do."""


@dataclass(frozen=True)
class InputRange:
    """Inclusive (min, max) of batch, height and width a loaded model accepts; max None = unbounded.
    `opt` is the (batch, height, width) an engine was tuned for, when it has one; `multiple`: what both sides
    must be a multiple of."""

    batch: tuple[int, int | None]
    height: tuple[int, int | None]
    width: tuple[int, int | None]
    opt: tuple[int, int, int] | None = None
    multiple: int = 1

    @classmethod
    def fixed(cls, batch: int, height: int, width: int) -> "InputRange":
        return cls((batch, batch), (height, height), (width, width), (batch, height, width))

    @classmethod
    def from_profile(cls, lo, opt, hi) -> "InputRange":
        """From (batch, height, width) min/opt/max triples (a TensorRT optimisation profile)."""
        return cls((lo[0], hi[0]), (lo[1], hi[1]), (lo[2], hi[2]), tuple(opt))

    @property
    def max_batch(self) -> int | None:
        return self.batch[1]

    def contains(self, batch: int, height: int, width: int) -> bool:
        return height % self.multiple == 0 and width % self.multiple == 0 and all(
            lo <= v and (hi is None or v <= hi)
            for v, (lo, hi) in zip((batch, height, width), (self.batch, self.height, self.width)))

    def describe(self) -> str:
        if self.batch[0] == self.batch[1] and self.height[0] == self.height[1] and self.width[0] == self.width[1]:
            return f"batch {self.batch[0]} at {self.width[0]}x{self.height[0]}"

        def span(name, lo, hi):
            return f"{name} {lo}" if lo == hi else f"{name} {lo}-{hi}" if hi else f"{name} >= {lo}"
        text = ", ".join(span(n, *r) for n, r in (("batch", self.batch), ("height", self.height),
                                                     ("width", self.width)))
        return text + (f", sides multiples of {self.multiple}" if self.multiple > 1 else "")


def export_range(info: ModelInfo) -> InputRange:
    """What a graph exported by jal-export declares: batch 1-64 and sides 32-4096, or batch 1 at the
    training size with --static."""
    w, h = info.input_size
    if not info.dynamic:
        return InputRange.fixed(1, h, w)
    return InputRange((1, MAX_BATCH), (MIN_SIDE, MAX_SIDE), (MIN_SIDE, MAX_SIDE))


def default_profile(info: ModelInfo, max_batch: int = 8) -> tuple[tuple[int, int, int], ...]:
    """(min, opt, max) (batch, height, width) of a TensorRT profile when none is given: half to twice the
    training size, batch 1-8 (fixed for a static graph). Shared by jal-export and ONNX Runtime's TensorRT EP."""
    w, h = info.input_size
    if not info.dynamic:
        return (1, h, w), (1, h, w), (1, h, w)
    return (1, h // 2, w // 2), (1, h, w), (max_batch, h * 2, w * 2)


def tensor_shape(info: ModelInfo, bhw) -> tuple[int, ...]:
    """(batch, height, width) -> the input tensor's shape in the graph's layout."""
    b, h, w = bhw
    return (b, h, w, 3) if info.input_format == "uint8_bgr_nhwc" else (b, 3, h, w)


def batch_hw(info: ModelInfo, shape) -> tuple[int, int, int]:
    """The input tensor's shape -> (batch, height, width)."""
    s = tuple(int(v) for v in shape)
    return (s[0], s[1], s[2]) if info.input_format == "uint8_bgr_nhwc" else (s[0], s[2], s[3])


class Backend:
    """`backend(batch) -> output`: batch is uint8 (N, H, W, 3) BGR or float32 (N, 3, H, W) as `info.input_format`
    says; output is uint8 labels (N, H, W) or float32 logits (N, C, H, W) as `info.output` says."""

    name = "backend"
    info: ModelInfo
    device = "cpu"           # where it really runs (checked after loading, not what was asked for)
    path = None
    accepts: InputRange | None = None  # set by each backend; None = what the export declared

    def __init__(self) -> None:
        self.notes: list[str] = []  # things the user should know (e.g. an automatic fallback to CPU)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def input_range(self) -> InputRange:
        """The batch and sizes this loaded model accepts (the Segmenter picks sizes and splits batches by it)."""
        return self.accepts or export_range(self.info)

    def describe(self) -> str:
        return f"{self.name} on {self.device} ({self.info.precision}, {self.info.arch})"

    def close(self) -> None:
        """Release sessions and device memory (also on garbage collection)."""

    def shape_error(self, batch: np.ndarray, error: Exception) -> BackendError:
        return BackendError(f"{self.path} rejected an input of shape {tuple(batch.shape)} {batch.dtype} "
                            f"(it accepts {self.input_range().describe()}, {self.info.input_format}): {error}")
