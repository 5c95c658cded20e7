"""Typed training configuration: dataclass defaults, overlaid by a preset YAML, then by `--set key=value`.

Keys are checked against the defaults (an unknown key or a value of the wrong type is an error naming it),
and the resolved config is saved in the run folder and in every checkpoint.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple, get_args, get_origin, get_type_hints

import yaml

class Method(NamedTuple):
    """What one `--method` trains. `labels`: whose labels the segmentation loss reads; only the `oracle`
    baseline reads the target's (it never reads a source image), every other method the source's."""

    adversarial: bool
    jal: bool
    wtm: str                 # WTM levels: none | low | high | both
    labels: str = "source"   # source | target
    self_training: bool = False  # target images also get a segmentation loss on pseudo labels


# Table 4 of the paper, one row per method name, plus the benchmark's upper bound (`oracle`: the source-only
# recipe on the target train labels, the same network and budget).
METHOD_FLAGS: dict[str, Method] = {
    "source-only": Method(False, False, "none"),
    "adaptsegnet": Method(True, False, "none"),
    "jal": Method(True, True, "none"),
    "wtm-dec1": Method(True, False, "low"),
    "wtm-dec2": Method(True, False, "high"),
    "wtm": Method(True, False, "both"),
    "jal-wtm": Method(True, True, "both"),
    "oracle": Method(False, False, "none", labels="target"),
}
METHODS = tuple(METHOD_FLAGS)
D_INPUTS = ("softmax", "onehot")  # method.d_input
# keys of earlier versions, with the value that kept them off: a checkpoint or run folder that has them at that
# value still loads (the key is dropped), one that switched them on trained a variant this version cannot resume
REMOVED_KEYS = {
    "method.target_only": False,
    "method.pseudo_class_weights": "none",
    "method.mix": "none",
    "method.mix_ema": 0.99,
    "method.mix_confidence": 0.968,
    "method.lambda_mix": 1.0,
}


PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A preset or --set override that does not fit the configuration schema."""


@dataclass
class ModelConfig:
    arch: str = "deeplabv2-r101"
    num_classes: int = 19
    width: float = 1.0
    aspp_branches: int = 4
    bn_mode: str = "frozen"
    wtm_kernel_grad: bool = True
    init: str = ""            # checkpoint to start from (ImageNet/COCO init, a released model, or ours)
    init_fmt: str = "auto"
    init_required: bool = False  # paper presets: refuse to start without a complete backbone from `init`
    ndf: int = 64             # discriminator base width
    target_bn_frames: int = 0  # >0: BatchNorm statistics re-estimated on this many target train frames (AdaBN)


@dataclass
class DataConfig:
    source: str = "gta5"      # gta5 | synthia | cityscapes
    source_root: str = ""
    source_list: str = ""
    source_size: tuple[int, int] = (1280, 720)
    target_root: str = ""     # a Cityscapes-format tree
    target_list: str = ""
    target_size: tuple[int, int] = (1024, 512)
    val_root: str = ""        # a Cityscapes-format tree to validate on (default: target_root)
    val_split: str = "val"
    val_list: str = ""
    val_limit: int = 0        # 0 = the whole split
    target_labels: str = ""   # self-training: a Cityscapes-format pseudo-label tree (`jal-train pseudo-label`)
    fda_beta: float = 0.0     # Fourier domain adaptation of source images (0 = off; FDA publishes 0.01)
    color_jitter: float = 0.0  # photometric jitter strength of the labelled images (0 = off; DACS publishes 0.2)
    blur: bool = False        # random Gaussian blur of the labelled images (p 0.5, as DACS)
    rand_conv: bool = False   # random convolutions of the labelled images (RandConv)
    rand_conv_kernels: tuple[int, ...] = (1, 3, 5, 7)  # kernel sizes drawn from; (1,): a random colour matrix only
    rand_conv_mix: bool = True  # blend with the image by a factor from U(0, 1) (RandConv's mixing variant); false: conv only
    protocol: str = "19"      # the training classes: 19 (GTA5) or 16 (SYNTHIA)
    eval_protocols: tuple[str, ...] = ("19",)
    scale: tuple[float, float] = ()
    crop: tuple[int, int] = ()
    flip: bool = False
    batch_size: int = 1
    workers: int = 2
    cache: bool = False       # keep decoded, resized frames in memory (small datasets; use with workers=0)
    worker_start: str = "auto"  # loader processes: auto (spawn once CUDA is in use, else fork) | fork | spawn | forkserver
    synthetic: bool = False   # generate the embedded benchmark into synthetic_dir when absent
    synthetic_dir: str = ""


@dataclass
class MethodConfig:
    name: str = "jal-wtm"
    lambda_seg1: float = 0.1
    lambda_seg2: float = 1.0
    lambda_adv1: float = 2e-4
    lambda_adv2: float = 1e-3
    lambda_jal: float = 2e-4  # the paper leaves it open; D1 is the low-level discriminator, so its weight
    lambda_adv_wtm1: float = 2e-4
    lambda_adv_wtm2: float = 1e-3
    self_training: bool = False     # add the pseudo-label loss on target images to any method but the oracle
    lambda_seg_target: float = 1.0  # its weight (Bidirectional Learning: 1, as the source segmentation loss)
    # each pixel's pseudo-label loss weighted by exp(-KL(high || low)), the two decoders' disagreement, plus that
    # KL (Zheng & Yang, IJCV 2021): the student learns less from the labels its own decoders dispute
    pseudo_rectify: bool = False
    # what the discriminators see: the softmax maps (the paper, AdaptSegNet) or their one-hot argmax with a
    # straight-through gradient, which hides confidence so that only the layout of the classes is compared
    d_input: str = "softmax"


@dataclass
class OptimConfig:
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_d: float = 1e-4
    betas_d: tuple[float, float] = (0.9, 0.99)
    lr_wtm: float = 1e-4
    momentum_wtm: float = 0.9
    power: float = 0.9
    iters: int = 250_000      # poly schedule length
    stop_at: int = 150_000    # early stop (0 = run to `iters`)


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"      # auto | cpu | cuda
    amp: str = "none"         # none | bf16 (CUDA, or CPU with AMX / AVX-512 BF16) | fp16 (CUDA only)
    channels_last: bool = False
    log_every: int = 10
    eval_every: int = 2000    # 0: never (no labelled val is read during training)
    save_every: int = 2000
    keep: int = 3
    tensorboard: bool = True
    threads: int = 0          # torch CPU threads (0 = torch default)


@dataclass
class TrainConfig:
    preset: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def flags(self) -> Method:
        """What the method trains: the row of METHOD_FLAGS, plus self-training when switched on."""
        return METHOD_FLAGS[self.method.name]._replace(self_training=self.method.self_training)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        if self.method.name not in METHOD_FLAGS:
            raise ConfigError(f"method.name must be one of {', '.join(METHODS)}, got {self.method.name!r}")
        if self.method.d_input not in D_INPUTS:
            raise ConfigError(f"method.d_input must be one of {', '.join(D_INPUTS)}, got {self.method.d_input!r}")
        if self.run.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"run.amp must be none, bf16 or fp16, got {self.run.amp!r}")
        if self.method.self_training and self.method.name == "oracle":
            raise ConfigError("method.self_training: the oracle already trains on target labels")
        if self.method.self_training != bool(self.data.target_labels):
            raise ConfigError("method.self_training=true and data.target_labels=DIR go together (a pseudo-label "
                              "tree written by `jal-train pseudo-label`)")
        if self.method.pseudo_rectify and not self.method.self_training:
            raise ConfigError("method.pseudo_rectify weights the pseudo-label loss: it needs "
                              "method.self_training=true and data.target_labels=DIR")
        if not 0.0 <= self.data.fda_beta < 0.5:
            raise ConfigError(f"data.fda_beta must be in [0, 0.5), got {self.data.fda_beta}")
        if not 0.0 <= self.data.color_jitter <= 0.5:
            raise ConfigError(f"data.color_jitter must be in [0, 0.5], got {self.data.color_jitter}")
        kernels = self.data.rand_conv_kernels
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ConfigError(f"data.rand_conv_kernels must be odd sizes >= 1, got {list(kernels)}")
        if self.data.fda_beta and self.method.name == "oracle":
            raise ConfigError("data.fda_beta restyles source images; the oracle reads none")
        if self.data.worker_start not in ("auto", "fork", "spawn", "forkserver"):
            raise ConfigError(f"data.worker_start must be auto, fork, spawn or forkserver, got {self.data.worker_start!r}")
        if self.model.target_bn_frames < 0:
            raise ConfigError(f"model.target_bn_frames must be >= 0, got {self.model.target_bn_frames}")
        if self.model.target_bn_frames and self.model.bn_mode != "train":
            raise ConfigError("model.target_bn_frames needs model.bn_mode=train: with frozen statistics training "
                              "would itself run on the re-estimated target statistics")
        if self.model.target_bn_frames and self.method.name == "oracle":
            raise ConfigError("model.target_bn_frames: the oracle's statistics are target statistics already")
        if self.optim.stop_at and self.optim.stop_at > self.optim.iters:
            raise ConfigError(f"optim.stop_at ({self.optim.stop_at}) is past optim.iters ({self.optim.iters})")
        return self

    @property
    def last_iteration(self) -> int:
        return self.optim.stop_at or self.optim.iters


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = get_origin(typ)
    try:
        if isinstance(value, dict) or (isinstance(value, list) and origin is not tuple):
            raise ValueError(value)  # a YAML mapping/list given for a scalar key
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace("x", ",").split(",") if v.strip()] if value else []
            item = get_args(typ)[0]
            return tuple(_coerce(v, item, key) for v in value)
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        if typ in (int, float):
            return typ(float(value)) if typ is int else float(value)
        if typ is str:
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot read {value!r} as {getattr(typ, '__name__', typ)}") from None
    return value


def apply_overrides(obj: Any, updates: dict, prefix: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if full in REMOVED_KEYS:
            raise ConfigError(f"unknown config key {full!r}: it was removed in this version (a variant the "
                              "project's studies measured and rejected)")
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; known keys here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full} is a section; set its keys, e.g. {full}.{fields(current)[0].name}=...")
            apply_overrides(current, value, full + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    """The preset's config sections (its `pipeline:` list, if any, is read by `load_pipeline`)."""
    data = _load_preset(name)
    data.pop("pipeline", None)
    return data


def load_pipeline(name: str) -> list | None:
    """The raw `pipeline:` list of a preset (None when it has none); a derived preset inherits its base's."""
    return _load_preset(name).get("pipeline")


def _load_preset(name: str, _seen: tuple[str, ...] = ()) -> dict:
    """The preset's sections; `base: OTHER` at its top inherits OTHER's values, which the preset overrides key
    by key (so a derived preset follows later changes of its base); a `pipeline:` list is replaced whole."""
    path = Path(name)
    if not path.is_file():
        path = PRESET_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(preset_names())} (or a YAML path)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path} must be a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        return data
    if str(path.resolve()) in _seen:
        raise ConfigError(f"preset {path}: `base:` chain loops back to itself")
    base_path = path.parent / f"{base}.yaml" if (path.parent / f"{base}.yaml").is_file() else base
    inherited = _load_preset(str(base_path), _seen + (str(path.resolve()),))
    pipeline = data.pop("pipeline", inherited.pop("pipeline", None))
    merged = merge_overrides(inherited, data)
    return {**merged, "pipeline": pipeline} if pipeline is not None else merged


def merge_overrides(base: dict, top: dict) -> dict:
    """Nested config dicts merged key by key, `top` winning (a preset over its base, overrides over a preset)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = (merge_overrides(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict)
                    else value)
    return out


def cli_overrides(sets, method, iters, stop_at) -> dict:
    """--set pairs plus the shortcut options (--method, --iters, --stop-at), as one nested override dict."""
    overrides = parse_set(list(sets))
    for key, value in (("method.name", method), ("optim.iters", iters), ("optim.stop_at", stop_at)):
        if value is not None:
            section, name = key.split(".")
            overrides.setdefault(section, {})[name] = value
    return overrides


def parse_set(items: list[str]) -> dict:
    """['optim.lr=1e-3', 'data.crop=[256,128]'] -> nested dict. Scalars stay strings (the schema coerces them);
    YAML flow values (`[256,128]`, `{lr: 1e-3}`), as Hydra/OmegaConf users type them, are parsed as YAML."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _flow_value(key, value)
    return out


def _flow_value(key: str, value: str):
    text = value.strip()
    if not (text.startswith("[") or text.startswith("{")):
        return value
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot read {value!r} as a YAML list or mapping "
                          f"({str(e).splitlines()[0]})") from None


def resolve(preset: str = "", overrides: dict | None = None) -> TrainConfig:
    cfg = TrainConfig(preset=preset)
    if preset:
        apply_overrides(cfg, {k: v for k, v in load_preset(preset).items() if k != "preset"})
    apply_overrides(cfg, overrides or {})
    return cfg.validate()


def without_removed_keys(data: dict) -> dict:
    """A saved config (a checkpoint's or a run folder's) without the REMOVED_KEYS it holds at their old default,
    so that what an earlier version wrote still loads; a removed key switched on is refused by name."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for full, default in REMOVED_KEYS.items():
        section, key = full.split(".")
        if key not in out.get(section, {}):
            continue
        value = out[section].pop(key)
        if _coerce(value, type(default), full) != default:
            raise ConfigError(f"{full}={value} was removed in this version (a variant the project's studies measured "
                              f"and rejected): this config cannot be trained or resumed; its checkpoints still "
                              f"export (jal-export)")
    return out


def from_dict(data: dict) -> TrainConfig:
    """The config a checkpoint or run folder saved (see `without_removed_keys` for older ones)."""
    cfg = TrainConfig()
    apply_overrides(cfg, without_removed_keys(data))
    return cfg.validate()
