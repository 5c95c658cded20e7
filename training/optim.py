"""Learning-rate parameter groups: backbone 1x, heads 10x (DeepLab), WTM on its own optimiser.

The references hand SGD the backbone tensors several times (a generator walking nested modules), so most
backbone weights get 3-4x the intended step; here every trainable parameter appears in exactly one group.
"""
from __future__ import annotations

from torch import nn

HEAD_LR_MULT = 10.0


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """{'backbone': [...], 'heads': [...], 'wtm': [...]} of trainable parameters, each exactly once."""
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "heads": [], "wtm": []}
    owner = {"encoder": "backbone", "dec1": "heads", "dec2": "heads", "wtm1": "wtm", "wtm2": "wtm"}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".", 1)[0]
        if top not in owner:
            raise ValueError(f"parameter {name} belongs to no learning-rate group")
        groups[owner[top]].append(p)
    return groups


def sgd_param_groups(model: nn.Module, lr: float) -> list[dict]:
    """Groups for the network's SGD (backbone lr, heads 10x lr); WTM goes to its own optimiser."""
    g = parameter_groups(model)
    return [{"params": g["backbone"], "lr": lr, "lr_mult": 1.0, "name": "backbone"},
            {"params": g["heads"], "lr": lr * HEAD_LR_MULT, "lr_mult": HEAD_LR_MULT, "name": "heads"}]
