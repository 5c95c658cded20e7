"""The comparison picture: frames chosen by position, each column the real rendering of its model or the labels."""
import cv2
import numpy as np
import pytest

from jal_deploy.grid import comparison_grid, evenly_spaced, grid_image
from jal_deploy.labels import colorize
from jal_deploy.segmenter import Segmenter
from jal_deploy.sources import open_source


def test_evenly_spaced_indices():
    assert evenly_spaced(100, 4) == [0, 25, 50, 75]
    assert evenly_spaced(3, 4) == [0, 1, 2]
    assert evenly_spaced(10, 3) == [0, 3, 6]


def test_grid_layout_and_refusals():
    a, b = np.full((10, 20, 3), 10, np.uint8), np.full((10, 20, 3), 200, np.uint8)
    image = grid_image([[a, b], [b, a]], ["one", "two"], cell=(20, 10))
    header = image.shape[0] - (2 * 10 + 2 * 2)
    assert image.shape[1] == 2 * 20 + 2 and header >= 18
    assert (image[header + 2:header + 12, :20] == 10).all() and (image[header + 2:header + 12, 22:] == 200).all()
    assert (image[:, 20:22] == 255).all()                                    # the white line between columns
    with pytest.raises(ValueError, match="one image per title"):
        grid_image([[a]], ["one", "two"], cell=(20, 10))


def test_comparison_grid_shows_each_model_and_the_labels(synth_root, runtime_models, tmp_path):
    tree = synth_root / "cityscapes"
    out = tmp_path / "grid.png"
    seg = Segmenter.from_path(runtime_models["labels"], device="cpu")  # an open model is used as it is
    result = comparison_grid(tree, {"a": seg, "b": runtime_models["logits"]}, out, frames=2, cell=(128, 64))
    image = cv2.imread(str(out))
    items = [it for it in open_source(f"cityscapes:{tree}")]
    assert result["frames"] == [items[0].name, items[2].name]               # 4 val frames: indices 0 and 2
    assert image.shape == (image.shape[0], 4 * 128 + 3 * 2, 3)
    top = image.shape[0] - (2 * 64 + 2 * 2)                                  # header height
    for r, item in enumerate((items[0], items[2])):
        y = top + 2 + r * (64 + 2)
        cells = [image[y:y + 64, c * 130:c * 130 + 128] for c in range(4)]
        assert np.array_equal(cells[0], item.frame)
        assert np.abs(cells[1].astype(int) - seg.overlay(item.frame, seg.predict(item.frame))).max() <= 1
        assert np.array_equal(cells[3], colorize(item.label))
    seg.close()
