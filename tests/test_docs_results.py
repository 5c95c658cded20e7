"""One source for each number: the results tables of the README, the docs and the model card agree with the files
the benchmarks and jal-export wrote."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_docs import ROOT, rel

def tables(path: Path) -> list[dict[str, list[str]]]:
    """The markdown tables of a page, each as its rows keyed by their first cell (backticks and bold removed)."""
    found, rows = [], None
    for line in path.read_text().split("\n") + [""]:
        if not line.startswith("|"):
            if rows:
                found.append(rows)
            rows = None
            continue
        rows = {} if rows is None else rows
        if not set(line) <= set("|-: "):
            cells = [c.strip().replace("**", "").replace("`", "") for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells[1:])
    return found


def table_with(path: Path, *labels: str) -> dict[str, list[str]]:
    """The first table of the page whose rows start with each of `labels`."""
    for rows in tables(path):
        if all(any(k.startswith(label) for k in rows) for label in labels):
            return rows
    raise AssertionError(f"{rel(path)} has no table with rows {labels}")


def row(rows: dict[str, list[str]], label: str) -> list[str]:
    return next(v for k, v in rows.items() if k.startswith(label))


SYNTH = json.loads((ROOT / "bench" / "results" / "synthetic-benchmark.json").read_text())
ROW_LABELS = {"prior": "prior (blind layout)", "oracle": "oracle (target labels)"}


@pytest.mark.parametrize("page", ["README.md", "docs/benchmarks.md"])
def test_synthetic_results_tables_match_the_benchmark_results_file(page):
    rows = table_with(ROOT / page, *(ROW_LABELS.get(name, name) for name in SYNTH["rows"]))
    for name, result in SYNTH["rows"].items():
        label = ROW_LABELS.get(name, name)
        assert label in rows, f"{page}: the results table has no row {label!r} ({SYNTH['rows'].keys()})"
        mean, gap, seeds = rows[label][:3]
        expected = f"{result['mean']:.2f}" + (f" +- {result['std']:.2f}" if "std" in result else "")
        assert mean == expected, f"{page}: row {label}: {mean!r}, the results file says {expected!r}"
        if "gap_closed" in result:
            assert gap == f"{result['gap_closed']:.1f} %", f"{page}: row {label}: gap {gap!r}"
        assert seeds == " / ".join(f"{v:.2f}" for v in result["per_seed"]), f"{page}: row {label}: seeds {seeds!r}"
    assert SYNTH["command"].split("--rows")[0].split() == \
        " ".join(re.search(r"python bench/synthetic_ablation\.py --out runs/cr-c2f8k-cpu.*?--rows",
                           " ".join((ROOT / page).read_text().replace("\\\n", " ").split()), re.S)
                 .group(0).split()).removesuffix("--rows").split(), f"{page}: the reproduce command differs"


CARD = ROOT / "models" / "README.md"


def card_fresh_val() -> dict[str, str]:
    """The model card's fresh-val table: prior, the shipped files (fp32 / int8), the oracle."""
    rows = table_with(CARD, "prior (", "source-only (", "oracle (")
    shipped = next(v for k, v in rows.items() if "(shipped)" in k)
    return {"prior": row(rows, "prior (")[0], "source-only": row(rows, "source-only (")[2], "adapted": shipped[2],
            "oracle": row(rows, "oracle (")[0]}


@pytest.mark.parametrize("page", ["README.md", "docs/benchmarks.md"])
def test_demo_model_tables_match_the_model_card(page):
    card = card_fresh_val()
    rows = table_with(ROOT / page, "prior (", "source-only (", "adapted (", "oracle (")
    got = {name: row(rows, f"{name} (")[0] for name in ["prior", "source-only", "adapted", "oracle"]}
    assert got == card, f"{page}: the demo model's table {got} differs from the model card's {card}"


def test_the_demo_numbers_quoted_in_prose_are_the_model_card_ones():
    demo = table_with(CARD, "road", "mIoU")["mIoU"]  # the per-class table's last row: source-only, adapted fp32, adapted int8 on the demo val
    for page in [ROOT / "README.md", ROOT / "docs" / "quickstart.md"]:
        text = " ".join(page.read_text().split())
        assert f"{demo[0]} (source-only) -> {demo[1]} (adapted)" in text or \
            f"source-only {demo[0]} -> adapted {demo[1]}" in text or f"{demo[0]} -> {demo[1]}" in text, rel(page)
        for quoted in re.findall(r"\b(\d+\.\d\d) -> (\d+\.\d\d)\b", text):
            assert list(quoted) == demo[:2], f"{rel(page)}: quotes {quoted}, the model card's demo val says {demo[:2]}"


def test_parity_numbers_in_the_model_card_match_parity_json():
    text = " ".join(CARD.read_text().split())
    for family in ["jal-wtm-ssl-synthetic-r18", "source-only-synthetic-r18"]:
        parity = json.loads((ROOT / "models" / f"{family}.parity.json").read_text())
        agreement = {p["precision"]: p["argmax_agreement"] for p in parity["parity"]}
        assert f"{agreement['int8']:.3f} %" in text, family


def video_line(r: dict) -> str:
    """One row of the stable-video tables, as README.md and docs/video.md print it."""
    return (f"| `{r['model']}` | {r['drive']} | {r['run']} | {r['miou']:.2f} | {r['tc']:.2f} | {r['flicker']:.2f} "
            f"| {r['fps_ratio']:.2f}x |")


def test_video_tables_match_the_benchmark_results_file():
    """docs/video.md has every row bench/results/temporal.json records; the README the drive no setting was
    chosen on (seed 11)."""
    rows = json.loads((ROOT / "bench" / "results" / "temporal.json").read_text())["rows"]
    readme, video = (ROOT / "README.md").read_text(), (ROOT / "docs" / "video.md").read_text()
    assert len(rows) == 24
    for r in rows:
        assert video_line(r) in video, f"docs/video.md lacks the row {video_line(r)}"
        if r["drive"].startswith("seed 11"):
            assert video_line(r) in readme, f"README.md lacks the row {video_line(r)}"


def family_line(r: dict) -> str:
    """One family's row of the shift-family tables, as README.md and docs/benchmarks.md print it."""
    def gap(v):
        return 100 * (v - r["source-only"]) / (r["oracle"] - r["source-only"])

    final = r["stages"][r["recipe_pick"]]
    best = max(r["stages"][c] for c in r["candidates"])
    return (f"| {r['family']} | {r['prior']:.2f} | {r['source-only']:.2f} | {r['source-only+tgt-bn']:.2f} "
            f"({gap(r['source-only+tgt-bn']):.1f} %) | {final:.2f} ({gap(final):.1f} %, `{r['recipe_pick']}`) "
            f"| {best:.2f} | {r['oracle']:.2f} |")


@pytest.mark.parametrize("page", ["README.md", "docs/benchmarks.md"])
def test_shift_family_tables_match_the_benchmark_results_file(page):
    rows = json.loads((ROOT / "bench" / "results" / "shift-families.json").read_text())["rows"]
    text = (ROOT / page).read_text()
    for r in rows:
        assert family_line(r) in text, f"{page} lacks the row {family_line(r)}"
