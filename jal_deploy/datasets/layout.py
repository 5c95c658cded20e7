"""Where the files of each dataset tree live, and how images pair with labels.

One definition of the three layouts (Cityscapes, GTA5, SYNTHIA-RAND-CITYSCAPES) that training, the runtime's
evaluation and `jal-data check` all walk, so a tree that passes the check is the tree training reads.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

FORMATS: tuple[str, ...] = ("cityscapes", "gta5", "synthia")
CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelIds.png"
_SHOW = 5  # how many offending files an error message names


# the two folders that make a root one of the formats (image folder, label folder)
TREE_FOLDERS: dict[str, tuple[str, str]] = {"cityscapes": ("leftImg8bit", "gtFine"), "gta5": ("images", "labels"),
                                            "synthia": ("RGB", "GT")}


def tree_format(root: Path) -> str | None:
    """The format a folder is laid out in (its image and label folders both present), or None."""
    return next((fmt for fmt, (images, labels) in TREE_FOLDERS.items()
                 if (root / images).is_dir() and (root / labels).is_dir()), None)


class DatasetError(Exception):
    """A dataset tree or file that cannot be used; the message says which file and what to do."""


@dataclass(frozen=True)
class Sample:
    """One image and its label. `label` is None for an unlabelled image (e.g. the target train split)."""

    name: str  # Cityscapes: "aachen_000000_000019"; GTA5/SYNTHIA: the file stem ("00001")
    image: Path
    label: Path | None
    city: str | None = None  # Cityscapes only


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _split(fmt: str, split: str | None) -> str | None:
    if fmt == "cityscapes":
        return split or "val"
    if split is not None:
        raise DatasetError(f"{fmt} trees have no splits (got split={split!r}); restrict them with a list file")
    return None


def image_dir(root: str | os.PathLike, fmt: str, split: str | None = None) -> Path:
    """The folder holding the images: leftImg8bit/{split}, images/ or RGB/."""
    _check_format(fmt)
    root = Path(root)
    split = _split(fmt, split)
    return {"cityscapes": root / "leftImg8bit" / str(split), "gta5": root / "images", "synthia": root / "RGB"}[fmt]


def label_dir(root: str | os.PathLike, fmt: str, split: str | None = None) -> Path:
    """The folder holding the labels: gtFine/{split}, labels/ or GT/LABELS/."""
    _check_format(fmt)
    root = Path(root)
    split = _split(fmt, split)
    return {"cityscapes": root / "gtFine" / str(split), "gta5": root / "labels", "synthia": root / "GT" / "LABELS"}[fmt]


def sample_name(image: Path, fmt: str) -> tuple[str, str | None]:
    """(name, city) of an image file; Cityscapes names must end in _leftImg8bit.png to find their label."""
    if fmt != "cityscapes":
        return image.stem, None
    if not image.name.endswith(CITYSCAPES_IMAGE_SUFFIX):
        raise DatasetError(f"{image} is not a Cityscapes image name (<city>_<seq>_<frame>{CITYSCAPES_IMAGE_SUFFIX})")
    return image.name[: -len(CITYSCAPES_IMAGE_SUFFIX)], image.parent.name


def label_path(root: str | os.PathLike, fmt: str, image: str | os.PathLike, split: str | None = None) -> Path:
    """The label file an image is expected to have (it may not exist)."""
    image = Path(image)
    name, city = sample_name(image, fmt)
    if fmt == "cityscapes":
        return label_dir(root, fmt, split) / str(city) / f"{name}{CITYSCAPES_LABEL_SUFFIX}"
    return label_dir(root, fmt, split) / image.name


def _describe_root(root: Path) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:10]
    return ", ".join(entries) if entries else "nothing"


def _layout_hint(fmt: str) -> str:
    return {
        "cityscapes": "leftImg8bit/{split}/<city>/*_leftImg8bit.png and gtFine/{split}/<city>/*_gtFine_labelIds.png",
        "gta5": "images/NNNNN.png and labels/NNNNN.png",
        "synthia": "RGB/NNNNNNN.png and GT/LABELS/NNNNNNN.png",
    }[fmt]


def read_list_file(list_file: str | os.PathLike) -> list[str]:
    """Entries of an AdaptSegNet/ADVENT list file: first token of each non-empty, non-# line."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DatasetError(f"list file {list_file} does not exist")
    entries = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line.split()[0])
    if not entries:
        raise DatasetError(f"list file {list_file} names no images")
    return entries


def _resolve_listed(root: Path, images: Path, fmt: str, entry: str) -> Path | None:
    # Lists hold paths relative to the image folder ("aachen/aachen_..._leftImg8bit.png", "00001.png");
    # also accept paths relative to the root and bare Cityscapes file names (the city is the first token).
    candidates = [images / entry, root / entry]
    if fmt == "cityscapes" and "/" not in entry:
        candidates.append(images / entry.split("_")[0] / entry)
    return next((c for c in candidates if c.is_file()), None)


def _list_images(root: Path, fmt: str, split: str | None, list_file: str | os.PathLike | None) -> list[Path]:
    images = image_dir(root, fmt, split)
    if list_file is not None:
        entries = read_list_file(list_file)
        resolved = [_resolve_listed(root, images, fmt, e) for e in entries]
        missing = [e for e, p in zip(entries, resolved) if p is None]
        if missing:
            raise DatasetError(
                f"{len(missing)} of {len(entries)} files named in {list_file} do not exist under {images}: "
                + ", ".join(missing[:_SHOW]) + (" ..." if len(missing) > _SHOW else "")
            )
        return [p for p in resolved if p is not None]
    if not images.is_dir():
        hint = ""
        if fmt == "cityscapes" and (root / "leftImg8bit").is_dir():
            hint = f"; splits present: {_describe_root(root / 'leftImg8bit')}"
        raise DatasetError(
            f"{images} does not exist: a {fmt} tree holds {_layout_hint(fmt)}; {root} contains "
            f"{_describe_root(root)}{hint}"
        )
    pattern = f"*/*{CITYSCAPES_IMAGE_SUFFIX}" if fmt == "cityscapes" else "*.png"
    found = sorted(p for p in images.glob(pattern) if not p.name.startswith("."))  # skip temp/hidden files
    if not found:
        raise DatasetError(f"no images matching {pattern} under {images} ({_layout_hint(fmt)})")
    return found


def find_samples(
    root: str | os.PathLike,
    fmt: str,
    split: str | None = None,
    list_file: str | os.PathLike | None = None,
    require_labels: bool = True,
) -> list[Sample]:
    """The samples of a tree, sorted by file name or in list-file order.

    `split` applies to Cityscapes only (default "val"). With `require_labels=False` an image without its label
    gets `label=None` (the unlabelled target split); otherwise a missing label is an error naming both files.
    """
    _check_format(fmt)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder")
    split = _split(fmt, split)
    samples = []
    missing = []
    for image in _list_images(root, fmt, split, list_file):
        name, city = sample_name(image, fmt)
        label = label_path(root, fmt, image, split)
        if not label.is_file():
            missing.append((image, label))
            label = None
        samples.append(Sample(name=name, image=image, label=label, city=city))
    if missing and require_labels:
        shown = "; ".join(f"{img} -> expected {lab}" for img, lab in missing[:_SHOW])
        raise DatasetError(
            f"{len(missing)} of {len(samples)} images have no label: {shown}"
            + (" ..." if len(missing) > _SHOW else "")
            + f" (run `jal-data check {root} --format {fmt}` to list them all)"
        )
    return samples


def orphan_labels(root: str | os.PathLike, fmt: str, samples: list[Sample], split: str | None = None) -> list[Path]:
    """Label files in the tree that no image of `samples` uses (e.g. images deleted or not downloaded)."""
    labels = label_dir(root, fmt, split)
    if not labels.is_dir():
        return []
    pattern = f"*/*{CITYSCAPES_LABEL_SUFFIX}" if fmt == "cityscapes" else "*.png"
    used = {s.label for s in samples}
    return [p for p in sorted(labels.glob(pattern)) if p not in used and not p.name.startswith(".")]
