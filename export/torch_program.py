"""torch.export program (`.pt2`) of the deploy graph: the runtime's torch backend loads it with
`torch.export.load` and needs no training code. `ModelInfo` travels as the extra file `model_info.json`."""
from __future__ import annotations

from pathlib import Path

import torch

from jal_deploy.atomic import atomic_path
from jal_deploy.backends.base import MAX_SIDE, MIN_SIDE, PROGRAM_SIDE_MULTIPLE
from jal_deploy.backends.torch_backend import EXTRA_FILE
from jal_deploy.modelinfo import ModelInfo

from .deploy import DeployNet
from .onnx_export import trace_inputs



def export_program(net: DeployNet, info: ModelInfo, path: str | Path) -> Path:
    """Dynamic programs take batch 1-64 and sides 32-4096 that are multiples of PROGRAM_SIDE_MULTIPLE."""
    x, dynamic_shapes = trace_inputs(net, info)
    if dynamic_shapes:
        m = PROGRAM_SIDE_MULTIPLE
        axes = dynamic_shapes["image"]
        sides = sorted(axes)[1:]
        shape = list(x.shape)
        for axis, name in zip(sides, ("height", "width")):
            axes[axis] = m * torch.export.Dim(f"{name}_{m}", min=MIN_SIDE // m, max=MAX_SIDE // m)
            shape[axis] = -(-shape[axis] // m) * m
        if list(x.shape) != shape:  # the example itself must fit the declared sides
            x = torch.zeros(shape, dtype=x.dtype)
    with torch.no_grad():
        program = torch.export.export(net, (x,), dynamic_shapes=dynamic_shapes)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp), extra_files={EXTRA_FILE: info.to_json()})
    return path


def load_program(path: str | Path):
    extra = {EXTRA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program, ModelInfo.from_json(extra[EXTRA_FILE])
