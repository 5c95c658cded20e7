"""A picture of what adaptation changed: labelled frames in rows, image | each model | ground truth in columns.

The frames are chosen by position in the tree (evenly spaced), never by how well a model does on them, so the
picture shows typical frames. Ground truth uses the same palette as the predictions; ignore pixels are black.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from jal_deploy.atomic import write_bytes
from jal_deploy.labels import colorize
from jal_deploy.outputs import caption
from jal_deploy.segmenter import Segmenter
from jal_deploy.sources import open_source


def evenly_spaced(n: int, count: int) -> list[int]:
    """`count` indices spread over 0..n-1 (all of them when n <= count)."""
    if n <= count:
        return list(range(n))
    return [int(i * n / count) for i in range(count)]


def grid_image(rows: list[list[np.ndarray]], titles: list[str], cell: tuple[int, int]) -> np.ndarray:
    """Rows of BGR images resized to `cell` (W, H), the columns captioned once with `titles` at the top."""
    if not rows or any(len(r) != len(titles) for r in rows):
        raise ValueError("every row needs one image per title")
    w, h = cell
    gap = 2  # white lines between cells

    def join(cells: list[np.ndarray]) -> np.ndarray:
        line = np.full((cells[0].shape[0], gap, 3), 255, np.uint8)
        return np.hstack([part for c in cells for part in (c, line)][:-1])

    lines = [join([caption(np.zeros((0, w, 3), np.uint8), t, scale=max(0.8, w / 900)) for t in titles])]
    for row in rows:
        lines.append(join([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA if im.shape[1] > w
                                      else cv2.INTER_NEAREST) for im in row]))
    width = lines[0].shape[1]
    return np.vstack([part for line in lines for part in (line, np.full((gap, width, 3), 255, np.uint8))][:-1])


def comparison_grid(tree: str | Path, models: dict[str, str | Path | Segmenter], out: str | Path, frames: int = 4,
                    cell: tuple[int, int] = (256, 128), device: str = "cpu") -> dict:
    """Write a PNG grid of `frames` evenly spaced frames of the labelled Cityscapes-format `tree`:
    image | one column per model (name -> artefact path, opened on `device`, or an open `Segmenter`, used as
    it is) | ground truth. Returns {'path', 'frames': names}."""
    source = open_source(f"cityscapes:{tree}")
    try:
        pick = set(evenly_spaced(source.length, frames))
        items = [item for i, item in enumerate(source) if i in pick]
    finally:
        source.close()
    bad = [it.name for it in items if it.frame is None or it.label is None]
    if bad or not items:
        raise ValueError(f"{tree}: no labelled frames to show" if not items else f"unreadable frames: {bad}")
    columns = [[it.frame for it in items]]
    for model in models.values():  # an open Segmenter stays open: the caller owns it
        opened = nullcontext(model) if isinstance(model, Segmenter) else Segmenter.from_path(model, device=device)
        with opened as seg:
            columns.append([seg.overlay(it.frame, seg.predict(it.frame)) for it in items])
    columns.append([colorize(it.label) for it in items])
    image = grid_image([list(r) for r in zip(*columns)], ["image", *models, "ground truth"], cell)
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f"OpenCV could not encode {out}")
    write_bytes(Path(out), data.tobytes())
    return {"path": str(out), "frames": [it.name for it in items]}
