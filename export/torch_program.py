"""torch.export program (`.pt2`) of the deploy graph: the runtime's torch backend loads it with
`torch.export.load` and needs no training code. `ModelInfo` travels as the extra file `model_info.json`."""
from __future__ import annotations

from pathlib import Path

import torch

from jal_deploy.atomic import atomic_path
from jal_deploy.modelinfo import ModelInfo

from .deploy import DeployNet
from .onnx_export import MAX_BATCH, MAX_SIDE, MIN_SIDE, example_input

EXTRA_FILE = "model_info.json"


def export_program(net: DeployNet, info: ModelInfo, path: str | Path) -> Path:
    w, h = info.input_size
    axes = (0, 1, 2) if net.input_format == "uint8_bgr_nhwc" else (0, 2, 3)
    dynamic_shapes = None
    if info.dynamic:
        dims = (torch.export.Dim("batch", min=1, max=MAX_BATCH), torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
                torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE))
        dynamic_shapes = {"image": dict(zip(axes, dims))}
    with torch.no_grad():
        program = torch.export.export(net, (example_input(net, h, w, batch=2 if info.dynamic else 1),),
                                      dynamic_shapes=dynamic_shapes)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp), extra_files={EXTRA_FILE: info.to_json()})
    return path


def load_program(path: str | Path):
    extra = {EXTRA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program, ModelInfo.from_json(extra[EXTRA_FILE])
