"""The README's results table says what the shipped checkpoints' own eval.json files say.

The table is written by hand; once a re-shipped model's row kept the numbers of the model it replaced for three
sessions. Each row names its checkpoint folder, so every number in it can be checked against the evaluation the
app serves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Columns: set, model, steps, PSNR, SSIM, DCI (all slots; action slots), edit locality / effect, report.
HEADER = "| set | model | steps | PSNR (dB) | SSIM | DCI D / C / I"


def _table_rows() -> list[tuple[str, str, list[str]]]:
    """(set, checkpoint name, cells with bold marks removed) for each row of the README's results table."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(HEADER)) + 2  # past the header and |---|
    rows, model_set = [], ""
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().replace("*", "") for cell in line.strip("|").split("|")]
        model_set = cells[0].strip("`") or model_set
        name = re.match(r"`([\w-]+)`:", cells[1])
        assert name, f"a results row must start its model cell with the checkpoint folder in backticks: {line}"
        rows.append((model_set, name.group(1), cells))
    return rows


def _numbers(cell: str) -> list[str]:
    return re.findall(r"\d+\.\d+", cell)


ROWS = _table_rows()


def test_every_shipped_checkpoint_has_a_row() -> None:
    shipped = {(p.parent.parent.name, p.parent.name) for p in (ROOT / "checkpoints").glob("*/*/eval.json")}
    assert shipped and {(s, n) for s, n, _ in ROWS} == shipped


@pytest.mark.parametrize("model_set,name,cells", ROWS, ids=[f"{s}/{n}" for s, n, _ in ROWS])
def test_row_matches_the_checkpoints_eval_json(model_set: str, name: str, cells: list[str]) -> None:
    s = json.loads((ROOT / "checkpoints" / model_set / name / "eval.json").read_text())
    assert _numbers(cells[3]) == [f"{s['psnr']:.1f}"]
    assert _numbers(cells[4]) == [f"{s['ssim']:.3f}"]
    dci = s["dci"]
    if not dci["applicable"]:
        assert cells[5] == cells[6] == "–"
        return
    keys = ("disentanglement", "completeness", "informativeness")
    expected = [dci[k] for k in keys] + [dci["on_action_slots"][k] for k in keys]
    assert _numbers(cells[5]) == [f"{v:.2f}" for v in expected]
    assert _numbers(cells[6]) == [f"{s['edit_locality']:.2f}", f"{s['edit_effect']:.2f}"]
