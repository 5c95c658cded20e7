"""Load the checkpoints users already have, and save/read our own.

Formats understood by ``load_weights`` (``fmt="auto"`` detects them from the keys):

- ``jal``: our checkpoints (``save_checkpoint``): a dict with ``format: jal-deploy`` and a ``model`` state dict.
- ``deeplab-init``: AdaptSegNet/ADVENT DeepLab-v2 ResNet-101 init files (``Scale.``-prefixed keys, e.g.
  ``DeepLab_resnet_pretrained_init-f81d91e8.pth``); its ``layer5`` is a single-level head on layer4 and is
  skipped by shape.
- ``deeplab``: their released adapted models and snapshots: bare keys ``conv1``, ``bn1``, ``layer1..4``,
  ``layer5`` (low head on layer3), ``layer6`` (high head on layer4); for VGG ``features.*``, ``features.29``
  (fc6), ``features.31`` (fc7) and ``classifier`` (the single head).
- ``torchvision-vgg16``: ImageNet VGG16 weights; ``features`` is sliced into the DeepLab layout (pool4 and
  pool5 removed), the fully connected classifier is ignored.
- ``d-adaptsegnet`` / ``d-advent``: discriminator snapshots (``conv1..conv4, classifier`` / ``0, 2, 4, 6, 8``).

Every load reports missing and unexpected keys; heads whose class count differs are skipped and reported;
a backbone tensor whose shape differs means another architecture and raises ``CheckpointError``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from jal_deploy.atomic import atomic_path

from .config import METHOD_FLAGS
from .models import TwoLevelSegmenter, build_model

CHECKPOINT_FORMAT = "jal-deploy"
FORMATS = ("auto", "jal", "deeplab-init", "deeplab", "torchvision-vgg16", "d-adaptsegnet", "d-advent")
_HEAD_PREFIXES = ("dec1.", "dec2.")


class CheckpointError(RuntimeError):
    """A file that cannot be loaded into the model, with a message saying why."""


@dataclass
class LoadReport:
    path: str
    fmt: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # present but shape differs (heads of another class count)

    @property
    def backbone_complete(self) -> bool:
        """True when every encoder tensor came from the file (what an init file must provide)."""
        return not any(k.startswith("encoder.") for k in self.missing)

    def __str__(self) -> str:
        lines = [f"{self.path}: format {self.fmt}, {len(self.loaded)} tensors loaded"]
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("skipped (shape differs)", self.skipped)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
                lines.append(f"  {title}: {len(keys)}: {shown}")
        return "\n".join(lines)


def read_checkpoint(path: str | Path) -> Any:
    """torch.load with ``weights_only=True`` and a readable error for anything that is not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign bytes (UnpicklingError, KeyError, ...)
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint "
                              f"({type(e).__name__}{': ' + detail if detail else ''})") from None


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> None:
    """Atomically write our format: the model's state dict, its `build_model` arguments (`model_config`) and
    any extra fields (the trainer adds its resolved `config`, optimiser states, iteration...)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": 1, "model_config": getattr(model, "config", {}),
               "model": model.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _state_dict_of(obj: Any) -> tuple[dict[str, torch.Tensor], bool]:
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj["model"], True
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError("the file holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}, False


def detect_format(keys: list[str], ours: bool) -> str:
    if ours:
        return "jal"
    if any(k.startswith("Scale.") for k in keys):
        return "deeplab-init"
    if "features.0.weight" in keys and any(k.startswith("classifier.0.") for k in keys):
        return "torchvision-vgg16"
    if "conv1.weight" in keys and "classifier.weight" in keys and not any(k.startswith("layer") for k in keys):
        return "d-adaptsegnet"
    if "0.weight" in keys and "8.weight" in keys:
        return "d-advent"
    if any(re.match(r"(conv1|layer\d|features)\.", k) for k in keys):
        return "deeplab"
    raise CheckpointError("unrecognised key layout (first keys: " + ", ".join(keys[:5]) + ")")


def _deeplab_key(k: str) -> str | None:
    k = re.sub(r"\.conv2d_list\.", ".branches.", k)
    if k.startswith("layer5."):
        return "dec1." + k[len("layer5."):]
    if k.startswith("layer6."):
        return "dec2." + k[len("layer6."):]
    if k.startswith("classifier."):  # single-head VGG models: the head is the high-level one
        return "dec2." + k[len("classifier."):]
    m = re.match(r"features\.(\d+)\.(.*)", k)
    if m and int(m.group(1)) in (29, 31):  # the reference VGG appends fc6/fc7 to `features`
        return f"encoder.fc{6 if m.group(1) == '29' else 7}.{m.group(2)}"
    return "encoder." + k


def _torchvision_vgg_key(k: str) -> str | None:
    m = re.match(r"features\.(\d+)\.(.*)", k)
    if not m:
        return None  # the ImageNet fully connected classifier has no DeepLab counterpart
    i = int(m.group(1))
    return f"encoder.features.{i if i < 23 else i - 1}.{m.group(2)}"  # pool4 (index 23) removed


_ADVENT_D = {"0": "conv1", "2": "conv2", "4": "conv3", "6": "conv4", "8": "classifier"}
_MAPPERS: dict[str, Callable[[str], str | None]] = {
    "jal": lambda k: k,
    "deeplab": _deeplab_key,
    "deeplab-init": lambda k: _deeplab_key(k.split(".", 1)[1]),
    "torchvision-vgg16": _torchvision_vgg_key,
    "d-adaptsegnet": lambda k: k,
    "d-advent": lambda k: _ADVENT_D.get(k.split(".")[0], k.split(".")[0]) + "." + k.split(".", 1)[1],
}


def load_weights(model: nn.Module, path: str | Path, fmt: str = "auto", loaded: Any = None) -> LoadReport:
    """Copy the tensors of a checkpoint into `model` by name; return what loaded, was missing or skipped.
    `loaded`: what `read_checkpoint(path)` already returned, so a caller that read the file is not made to
    read it again."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    state, ours = _state_dict_of_file(path, loaded)
    fmt = detect_format(list(state), ours) if fmt == "auto" else fmt
    target = model.state_dict()
    report = LoadReport(str(path), fmt)
    mapped: dict[str, torch.Tensor] = {}
    mismatched = []
    for key, value in state.items():
        name = _MAPPERS[fmt](key)
        if name is None or name not in target:
            report.unexpected.append(key)
        elif target[name].shape != value.shape:
            (report.skipped if name.startswith(_HEAD_PREFIXES) else mismatched).append(
                f"{key} {tuple(value.shape)} vs {tuple(target[name].shape)}")
        else:
            mapped[name] = value
    if mismatched:
        raise CheckpointError(f"{path} does not fit this architecture ({len(mismatched)} tensors differ in "
                              f"shape, e.g. {mismatched[0]}): was it trained with another --arch or width?")
    has_encoder = any(k.startswith("encoder.") for k in target)
    if not mapped or (has_encoder and not any(k.startswith("encoder.") for k in mapped)):
        raise CheckpointError(f"{path}: no tensor matches this model (format {fmt}); wrong file or --arch?")
    model.load_state_dict(mapped, strict=False)
    report.loaded = sorted(mapped)
    # Pre-1.0 checkpoints lack BN counters; their absence changes nothing and is not reported.
    report.missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    return report


def _state_dict_of_file(path: str | Path, loaded: Any = None) -> tuple[dict[str, torch.Tensor], bool]:
    try:
        return _state_dict_of(read_checkpoint(path) if loaded is None else loaded)
    except CheckpointError as e:
        msg = str(e)
        raise CheckpointError(msg if str(path) in msg else f"{path}: {msg}") from None


def load_trained(path: str | Path, arch: str | None = None, num_classes: int | None = None,
                 aspp_branches: int | None = None) -> tuple[TwoLevelSegmenter, dict]:
    """Build and load, in eval mode, the trained network of a checkpoint: ours carry their build arguments;
    for a released AdaptSegNet/ADVENT model pass `arch`, `num_classes` and `aspp_branches`.

    Returns (model, meta) with meta = {'build': build_model kwargs, 'train': the run's config (or {}),
    'provenance': checkpoint name, iteration, preset, method, datasets, best target mIoU,
    'discriminators': their state dicts by name (ours; {} for other files)}. The file is read once.
    """
    loaded = read_checkpoint(path)
    state = loaded if isinstance(loaded, dict) else {}
    build = dict(state.get("model_config") or {})
    train_cfg = state.get("config") if isinstance(state.get("config"), dict) and "method" in state["config"] else {}
    if not build and train_cfg:  # checkpoints written before model_config existed
        m = train_cfg["model"]
        build = {"arch": m["arch"], "num_classes": m["num_classes"], "width": m["width"],
                 "aspp_branches": m["aspp_branches"], "wtm": METHOD_FLAGS[train_cfg["method"]["name"]].wtm,
                 "bn_mode": m["bn_mode"], "wtm_kernel_grad": m["wtm_kernel_grad"]}
    if not build:
        build = {"arch": arch or "deeplabv2-r101", "num_classes": num_classes or 19,
                 "aspp_branches": aspp_branches or 2}
    else:
        for key, value in (("arch", arch), ("num_classes", num_classes), ("aspp_branches", aspp_branches)):
            if value is not None and value != build.get(key):
                raise ValueError(f"{path} was trained with {key}={build.get(key)}, not {value}")
    model = build_model(**build).eval()
    report = load_weights(model, path, loaded=loaded)
    missing = [k for k in report.missing if not k.startswith(("dec1.", "wtm1."))]  # not deployed anyway
    if missing:
        raise ValueError(f"{path} leaves deployed tensors missing ({len(missing)}, e.g. {missing[0]})")
    provenance = {"checkpoint": Path(path).name, "iteration": state.get("iteration")}
    if train_cfg:
        provenance.update(preset=train_cfg.get("preset"), method=train_cfg["method"]["name"],
                          source=train_cfg["data"]["source"], target="cityscapes")
        if train_cfg["method"].get("self_training"):  # the method's loss plus pseudo target labels
            provenance["self_training"] = True
        best = state.get("best") or {}
        if best.get("miou", -1) >= 0:
            provenance["best_target_miou"] = best["miou"]
    return model, {"build": build, "train": train_cfg, "provenance": provenance,
                   "discriminators": state.get("discriminators") or {}}
