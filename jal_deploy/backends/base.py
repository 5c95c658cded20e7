"""What every backend offers the `Segmenter`: one call from a batch in the graph's input format to its output."""
from __future__ import annotations

import numpy as np

from jal_deploy.modelinfo import ModelInfo


class BackendError(RuntimeError):
    """A model that cannot be loaded or run here; the message says why and what to do."""


class Backend:
    """`backend(batch) -> output`: batch is uint8 (N, H, W, 3) BGR or float32 (N, 3, H, W) as `info.input_format`
    says; output is uint8 labels (N, H, W) or float32 logits (N, C, H, W) as `info.output` says."""

    name = "backend"
    info: ModelInfo
    device = "cpu"           # where it really runs (checked after loading, not what was asked for)
    path = None

    def __init__(self) -> None:
        self.notes: list[str] = []  # things the user should know (e.g. an automatic fallback to CPU)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} on {self.device} ({self.info.precision}, {self.info.arch})"

    def close(self) -> None:
        """Release sessions and device memory (also on garbage collection)."""

    def shape_error(self, batch: np.ndarray, error: Exception) -> BackendError:
        w, h = self.info.input_size
        accepts = "any batch and height/width from 32 to 4096" if self.info.dynamic else f"batch 1 at {w}x{h}"
        return BackendError(f"{self.path} rejected an input of shape {tuple(batch.shape)} {batch.dtype} "
                            f"(it accepts {accepts}, {self.info.input_format}): {error}")
