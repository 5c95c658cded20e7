"""The shipped demo model: its card, its metadata and its measured mIoU agree."""
import hashlib
import json
import re
from pathlib import Path

import pytest

from jal_deploy.backends import open_backend
from jal_deploy.job import run_job
from jal_deploy.segmenter import Segmenter
from jal_deploy.sources import open_source
from jal_deploy.synth import generate

MODELS = Path(__file__).resolve().parents[1] / "models"
CARD = (MODELS / "README.md").read_text()
ROWS = re.findall(r"^\| `(jal-wtm-synthetic-r18[.\w]*\.onnx)` \| (\w+) \| ([\d,]+) bytes \| `([0-9a-f]{64})` \|$", CARD, re.M)


def test_card_lists_every_shipped_model_with_size_and_checksum():
    assert sorted(r[0] for r in ROWS) == sorted(p.name for p in MODELS.glob("*.onnx")) and len(ROWS) == 2
    total = 0
    for name, precision, size, sha in ROWS:
        data = (MODELS / name).read_bytes()
        assert len(data) == int(size.replace(",", "")) and hashlib.sha256(data).hexdigest() == sha, name
        total += len(data)
    assert total < 25e6  # the budget for the shipped models


def test_card_and_embedded_metadata_agree():
    for name, precision, _, _ in ROWS:
        info = open_backend(MODELS / name).info
        assert info.precision == precision
        assert f"`{info.arch}`" in CARD and f"input size `{info.input_size[0]}x{info.input_size[1]}`" in CARD
        assert f"(protocol `{info.protocol}`)" in CARD and f"{info.num_classes} Cityscapes classes" in CARD
        assert info.input_format == "uint8_bgr_nhwc" and info.output == "labels" and info.dynamic
        shown = json.loads(re.search(r"provenance `(\{.*?\})`", CARD, re.S).group(1).replace("\n  ", " "))
        for key, value in shown.items():
            assert info.provenance[key] == pytest.approx(value, abs=5e-5) if isinstance(value, float) \
                else info.provenance[key] == value, key
        assert f"**{info.provenance['iteration']} JAL+WTM iterations**" in CARD
        assert info.provenance["method"] == "jal-wtm" and info.provenance["preset"] == "synthetic-tiny"
    parity = json.loads((MODELS / "jal-wtm-synthetic-r18.parity.json").read_text())
    agreement = {p["precision"]: p["argmax_agreement"] for p in parity["parity"]}
    assert f"int8 {agreement['int8']:.3f} %" in CARD and f"fp32 argmax agreement {agreement['fp32']:.5f} %" in CARD


@pytest.fixture(scope="module")
def card_val(tmp_path_factory):
    """The exact 100 target val frames the card scores (same seed and subset; frames depend on nothing else)."""
    root = tmp_path_factory.mktemp("card-val")
    generate(root, seed=0, counts={"gta5": 0, "synthia": 0, "cs_train": 0, "cs_val": 100}, size=(512, 256),
             progress=False, workers=2)
    return root / "cityscapes"


@pytest.mark.parametrize("name,column", [("jal-wtm-synthetic-r18.onnx", 1), ("jal-wtm-synthetic-r18.int8.onnx", 2)])
def test_shipped_model_reproduces_the_card_miou(card_val, tmp_path, name, column):
    stated = float(re.search(r"^\| \*\*mIoU\*\* \| (.*) \|$", CARD, re.M).group(1).split("|")[column].strip(" *"))
    seg = Segmenter.from_path(MODELS / name, device="cpu")
    result = run_job(seg, open_source(f"cityscapes:{card_val}"), tmp_path, save=(), progress=False)
    assert 100 * result.metrics["miou"] == pytest.approx(stated, abs=0.05)
    table = re.findall(r"^\| ([a-z ]+) \| +([\d.]+) \| +([\d.]+) \| +([\d.]+) \|$", CARD, re.M)
    for cls, *values in table:
        assert 100 * result.metrics["per_class"][cls] == pytest.approx(float(values[column]), abs=0.05), cls
