"""The analysis scripts in scripts/ (the commands that reproduce reports/recipe-variants) run end to end on the tiny
model set, and refuse bad input with one line that names what to fix."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
from conftest import TINY_SET

from flam.models.model_set import TOKENIZER
from flam.models.train import train_lam

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# script, extra arguments, a line of its report
RUNS = [
    ("action_probe.py", [], "recall"),
    ("agent_key_distances.py", [], "nearest:"),
    ("dci_penalties.py", ["--episodes", "4"], "picked penalties"),
    ("dci_probe_fits.py", ["--episodes", "4", "--iterations", "5", "50", "--l2-grid", "1e-3", "1e-6"], "at most 50"),
    ("probe_misses.py", ["--episodes", "4"], "masks peak on their entity's cell"),
    ("rollout_agent_errors.py", [], "rollout step 10"),
    ("slot_masses.py", [], "share of each agent's cell"),
    ("step_errors.py", ["--start", "0", "3"], "moves lost, by agent"),
    ("split_cuts.py", ["--slot", "0", "--clips", "8"], "whole"),
]


def run_script(monkeypatch: pytest.MonkeyPatch, name: str, *args: object) -> int:
    """Run a script as `python scripts/NAME ARGS` would, in this process (a process each would import torch again):
    -> its exit status."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / name), *map(str, args)])
    monkeypatch.syspath_prepend(str(SCRIPTS))
    try:
        runpy.run_path(str(SCRIPTS / name), run_name="__main__")
    except SystemExit as end:
        return int(end.code or 0)
    return 0


@pytest.mark.parametrize(("name", "extra", "expected"), RUNS, ids=[run[0] for run in RUNS])
def test_script_reports_on_a_trained_flam(name: str, extra: list[str], expected: str, tiny_checkpoints: Path,
                                          tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    # The tiny dataset's validation split has one episode; its training split has ten.
    flam = tiny_checkpoints / TINY_SET / "flam"
    status = run_script(monkeypatch, name, flam, tiny_dataset, "--split", "train", *extra)
    output = capsys.readouterr()
    assert status == 0, output.err
    assert expected in output.out


def test_scripts_refuse_bad_input_with_a_reason(tiny_checkpoints: Path, tiny_dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    flam, monolithic = tiny_checkpoints / TINY_SET / "flam", tiny_checkpoints / TINY_SET / "monolithic"
    cases = [
        (("slot_masses.py", monolithic, tiny_dataset), "is not a FLAM checkpoint"),
        (("step_errors.py", flam, tmp_path / "missing"), "no such folder"),
        (("step_errors.py", flam, tiny_dataset, "--split", "holdout"), "expected one of train, val, test"),
        (("step_errors.py", tmp_path, tiny_dataset), str(tmp_path)),
        (("slot_claims.py", flam, tiny_dataset), "has the attention aggregator"),
        (("dci_probe_fits.py", flam, tiny_dataset, "--iterations", "0"), "--iterations must be positive"),
        (("dci_probe_fits.py", flam, tiny_dataset, "--l2-grid", "-1"), "--l2-grid penalties must be >= 0"),
    ]
    for args, reason in cases:
        status = run_script(monkeypatch, *args)  # argparse's error: usage, then the reason, status 2
        error = capsys.readouterr().err
        assert status == 2 and reason in error, (args, error)


def test_slot_claims_reads_an_anchored_flam_and_its_edits(tiny_checkpoints: Path, tiny_dataset: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    anchored = tmp_path / "anchored"
    tokenizer = tiny_checkpoints / TINY_SET / TOKENIZER
    train_lam("flam", tokenizer, tiny_dataset, anchored, preset="tiny", steps=2, slots=3, action_size=6,
              overrides={"aggregator": "anchored", "hard_anchor": True}, log=lambda message: None)  # fmt: skip
    status = run_script(monkeypatch, "slot_claims.py", anchored, tiny_dataset, "--split", "train", "--edit", "1")
    output = capsys.readouterr()
    assert status == 0, output.err
    assert "hard anchor on" in output.out and "claim of each slot" in output.out
    assert "with slot 1 edited" in output.out
    status = run_script(monkeypatch, "slot_claims.py", anchored, tiny_dataset, "--split", "train", "--edit", "3")
    assert status == 2 and "--edit must name a slot from 0 to 2" in capsys.readouterr().err


def test_split_replay_lists_where_the_split_rules_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    record = SCRIPTS.parent / "reports" / "recipe-variants" / "mg8-cur-parts-training.json"
    assert run_script(monkeypatch, "split_replay.py", record) == 0
    output = capsys.readouterr().out  # the third try's checks at 3,500, 3,750 and 4,250 split nothing then
    assert "4 checks, 3 decided otherwise" in output and "step 4000" not in output
    broken = tmp_path / "training.json"
    broken.write_text("{")
    assert run_script(monkeypatch, "split_replay.py", broken) == 2
    assert "not a readable training record" in capsys.readouterr().err
