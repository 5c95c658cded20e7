"""Dataset formats (Cityscapes, GTA5, SYNTHIA-RAND-CITYSCAPES): layout, readers, writers and a tree check.

Torch-free on purpose: the runtime evaluates Cityscapes val with these readers and `training/` wraps the
same samples in torch Datasets, so both see identical label maps.
"""
from .check import TreeReport, check_tree, format_report
from .layout import (
    FORMATS,
    DatasetError,
    Sample,
    find_samples,
    image_dir,
    label_dir,
    label_path,
    orphan_labels,
    read_list_file,
)
from .readers import image_size, label_lut, label_names, read_image, read_label, read_raw_label
from .writers import write_image, write_raw_label

__all__ = [
    "FORMATS", "DatasetError", "Sample", "TreeReport", "check_tree", "find_samples", "format_report",
    "image_dir", "image_size", "label_dir", "label_lut", "label_names", "label_path", "orphan_labels",
    "read_image", "read_label", "read_list_file", "read_raw_label", "write_image", "write_raw_label",
]
