"""The deploy graph: Enc + Dec2^T (WTM folded) + bilinear upsample, with optional pre/post-processing.

Dec1, Dec1^T, WTM modules and every discriminator are dropped. With `input_format="uint8_bgr_nhwc"` the
graph takes raw OpenCV frames (1 byte per value over the bus instead of 4) and normalises inside; with
`output="labels"` it ends in argmax and returns one uint8 per pixel instead of C floats. Both are the
defaults because they move the fewest bytes; `float_bgr_nchw` / `logits` give the plain network.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from jal_deploy.labels import get_protocol
from jal_deploy.modelinfo import ModelInfo
from training.checkpoints import load_weights, read_checkpoint
from training.config import METHOD_FLAGS
from training.models import TwoLevelSegmenter, build_model, fold_decoder


class DeployNet(nn.Module):
    def __init__(self, model: TwoLevelSegmenter, mean, std, input_format: str = "uint8_bgr_nhwc",
                 output: str = "labels"):
        super().__init__()
        self.encoder = copy.deepcopy(model.encoder)
        # Eq. 6 once, offline: the deployed decoder is Dec2^T when the model has a WTM on Dec2.
        self.decoder = fold_decoder(model.dec2, model.wtm2) if model.wtm2 is not None else copy.deepcopy(model.dec2)
        self.input_format, self.output = input_format, output
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.input_format == "uint8_bgr_nhwc":
            x = (image.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std
        else:
            x = image
        _, high = self.encoder(x)
        logits = F.interpolate(self.decoder(high), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return logits.argmax(1).to(torch.uint8) if self.output == "labels" else logits


def load_trained(path: str | Path, arch: str | None = None, num_classes: int | None = None,
                 aspp_branches: int | None = None) -> tuple[TwoLevelSegmenter, dict]:
    """Rebuild the trained network of a checkpoint: ours carry their build arguments; for a released
    AdaptSegNet/ADVENT model pass `arch`, `num_classes` and `aspp_branches`."""
    state = read_checkpoint(path)
    state = state if isinstance(state, dict) else {}
    build = dict(state.get("model_config") or {})
    train_cfg = state.get("config") if isinstance(state.get("config"), dict) and "method" in state["config"] else {}
    if not build and train_cfg:  # checkpoints written before model_config existed
        m = train_cfg["model"]
        build = {"arch": m["arch"], "num_classes": m["num_classes"], "width": m["width"],
                 "aspp_branches": m["aspp_branches"], "wtm": METHOD_FLAGS[train_cfg["method"]["name"]][2],
                 "bn_mode": m["bn_mode"], "wtm_kernel_grad": m["wtm_kernel_grad"]}
    if not build:
        build = {"arch": arch or "deeplabv2-r101", "num_classes": num_classes or 19,
                 "aspp_branches": aspp_branches or 2}
    else:
        for key, value in (("arch", arch), ("num_classes", num_classes), ("aspp_branches", aspp_branches)):
            if value is not None and value != build.get(key):
                raise ValueError(f"{path} was trained with {key}={build.get(key)}, not {value}")
    model = build_model(**build).eval()
    report = load_weights(model, path)
    missing = [k for k in report.missing if not k.startswith(("dec1.", "wtm1."))]  # not deployed anyway
    if missing:
        raise ValueError(f"{path} leaves deployed tensors missing ({len(missing)}, e.g. {missing[0]})")
    provenance = {"checkpoint": Path(path).name, "iteration": state.get("iteration")}
    if train_cfg:
        provenance.update(preset=train_cfg.get("preset"), method=train_cfg["method"]["name"],
                          source=train_cfg["data"]["source"], target="cityscapes")
        best = state.get("best") or {}
        if best.get("miou", -1) >= 0:
            provenance["best_target_miou"] = best["miou"]
    return model, {"build": build, "train": train_cfg, "provenance": provenance}


def model_info(model: TwoLevelSegmenter, meta: dict, input_format: str, output: str, dynamic: bool,
               precision: str = "fp32") -> ModelInfo:
    train = meta["train"]
    protocol = get_protocol(train["data"]["protocol"] if train else ("19" if model.num_classes == 19 else "16"))
    if protocol.num_classes != model.num_classes:
        raise ValueError(f"the model has {model.num_classes} classes but protocol {protocol.name} has "
                         f"{protocol.num_classes}")
    size = list(train["data"]["target_size"]) if train else [1024, 512]
    return ModelInfo(arch=meta["build"]["arch"], class_names=list(protocol.class_names),
                     palette=protocol.palette.tolist(), protocol=protocol.name, input_size=size,
                     input_format=input_format, output=output, dynamic=dynamic, precision=precision,
                     output_names=[output], provenance=meta["provenance"]).validate()
