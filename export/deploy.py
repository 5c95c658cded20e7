"""The deploy graph: Enc + Dec2^T (WTM folded) + bilinear upsample, with optional pre/post-processing.

Dec1, Dec1^T, WTM modules and every discriminator are dropped. With `input_format="uint8_bgr_nhwc"` the
graph takes raw OpenCV frames (1 byte per value over the bus instead of 4) and normalises inside; with
`output="labels"` it ends in argmax and returns one uint8 per pixel instead of C floats. Both are the
defaults because they move the fewest bytes; `float_bgr_nchw` / `logits` give the plain network, and `scores`
its class scores before the upsample (at 1/8 of the input size), which the runtime upsamples itself: what
video fusion (`jal-segment --temporal`) works best with.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from jal_deploy.labels import get_protocol
from jal_deploy.modelinfo import ModelInfo
from training.checkpoints import load_trained  # noqa: F401  (re-exported: export.deploy.load_trained)
from training.models import TwoLevelSegmenter, fold_decoder
from training.models.aspp import ASPP


def pad_classifier(decoder: ASPP, channels: int) -> ASPP:
    """`decoder` with `channels` output channels: the extra kernels and biases are zero and the graph slices them
    off before anything reads the scores, so labels and logits are the model's. What it is for: 19 outputs are
    not a multiple of 8, the tensor cores' granularity in fp16/bf16; 24 or 32 may run faster, or may not
    (bench/runtime_gpu.py measures it)."""
    classes = decoder.branches[0].out_channels
    if channels < classes:
        raise ValueError(f"--pad-classes {channels} is fewer than the model's {classes} classes")
    padded = copy.deepcopy(decoder)
    for i, conv in enumerate(decoder.branches):
        wide = nn.Conv2d(conv.in_channels, channels, conv.kernel_size, padding=conv.padding, dilation=conv.dilation,
                         bias=True).to(conv.weight.device)
        with torch.no_grad():
            wide.weight.zero_()
            wide.bias.zero_()
            wide.weight[:classes] = conv.weight
            wide.bias[:classes] = conv.bias
        padded.branches[i] = wide.requires_grad_(False)
    return padded


class DeployNet(nn.Module):
    def __init__(self, model: TwoLevelSegmenter, mean, std, input_format: str = "uint8_bgr_nhwc",
                 output: str = "labels", pad_classes: int | None = None):
        """pad_classes: the classifier's output channels (zero-padded, sliced back in the graph); None keeps
        the model's class count."""
        super().__init__()
        self.encoder = copy.deepcopy(model.encoder)
        # Eq. 6 once, offline: the deployed decoder is Dec2^T when the model has a WTM on Dec2.
        self.decoder = fold_decoder(model.dec2, model.wtm2) if model.wtm2 is not None else copy.deepcopy(model.dec2)
        self.num_classes = model.num_classes
        self.padded = bool(pad_classes) and pad_classes != model.num_classes
        if self.padded:
            self.decoder = pad_classifier(self.decoder, pad_classes)
        self.input_format, self.output = input_format, output
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.input_format == "uint8_bgr_nhwc":
            # Cast first: TensorRT's ONNX parser accepts a uint8 input only when it feeds a Cast directly.
            x = (image.float().permute(0, 3, 1, 2) - self.mean) * self.inv_std
        else:
            x = image
        _, high = self.encoder(x)
        scores = self.decoder(high)
        if self.padded:  # before the upsample: the zero channels cost no interpolation and can win no argmax
            scores = scores[:, :self.num_classes]
        if self.output == "scores":
            return scores
        logits = F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return logits.argmax(1).to(torch.uint8) if self.output == "labels" else logits


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
