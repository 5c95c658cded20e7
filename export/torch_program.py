"""torch.export program (`.pt2`) of the deploy graph: the runtime's torch backend loads it with
`torch.export.load` and needs no training code. `ModelInfo` travels as the extra file `model_info.json`."""
from __future__ import annotations

from pathlib import Path

import torch

from jal_deploy.atomic import atomic_path
from jal_deploy.backends.torch_backend import EXTRA_FILE
from jal_deploy.modelinfo import ModelInfo

from .deploy import DeployNet
from .onnx_export import trace_inputs



def export_program(net: DeployNet, info: ModelInfo, path: str | Path) -> Path:
    x, dynamic_shapes = trace_inputs(net, info)
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
