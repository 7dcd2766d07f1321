"""The analysis scripts in scripts/ (the commands that reproduce reports/recipe-variants) run end to end on the tiny
model set, and refuse bad input with one line that names what to fix; the short 8-agent training script runs its real
commands, each cut to two steps of the tiny preset."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
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
    # The docstring's command: the records before crowded_slot, whose count crowded_slot's docstring states.
    repo = SCRIPTS.parent
    before = [path for pattern in ("reports/recipe-variants/*-training.json", "checkpoints/*/*/training.json")
              for path in sorted(repo.glob(pattern))]  # fmt: skip
    excludes = ["--exclude", "mg8-cur2", "--exclude", "mg8-cur3", "--exclude", "mg8-cur4"]
    assert run_script(monkeypatch, "split_replay.py", *before, *excludes) == 0
    assert "34 checks, 5 decided otherwise" in capsys.readouterr().out
    broken = tmp_path / "training.json"
    broken.write_text("{")
    assert run_script(monkeypatch, "split_replay.py", broken) == 2
    assert "not a readable training record" in capsys.readouterr().err


def test_short_8_agent_recipe_chains_its_stages_and_resumes(tiny_dataset: Path, tmp_path: Path) -> None:
    # FLAM stands for the real CLI with every training cut to 2 steps of the tiny preset, and logs each command.
    calls = tmp_path / "calls.jsonl"
    flam = tmp_path / "flam"
    flam.write_text(f"""#!{sys.executable}
import json, sys
from flam.main import main
argv = sys.argv[1:]
if argv[:2] == ["train", "lam"]:
    argv[argv.index("--steps") + 1] = "2"
    argv += ["--preset", "tiny"]
with open({str(calls)!r}, "a") as log:
    log.write(json.dumps(argv) + "\\n")
sys.exit(main(argv))
""")
    flam.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    for agents in (4, 8):  # the 8-agent tokenizer reads any 64 px multigrid frames
        (data / f"multigrid-{agents}").symlink_to(tiny_dataset)
    env = {**os.environ, "FLAM": str(flam), "RUNS": str(tmp_path / "runs")}
    script = [str(SCRIPTS / "train-short-8.sh"), str(data)]

    def run() -> list[list[str]]:
        calls.unlink(missing_ok=True)
        done = subprocess.run(script, cwd=SCRIPTS.parent, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return [json.loads(line) for line in calls.read_text().splitlines()]

    def value(argv: list[str], flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv else None

    first = run()
    runs = tmp_path / "runs" / "multigrid-8-short"
    stages = [runs / name for name in ("four-agents", "eight-agents", "parts", "flam-anchored")]
    assert [Path(value(argv, "--out")) for argv in first] == stages  # data was there: no `flam data generate`
    assert [value(argv, "--init") for argv in first] == [None, *map(str, stages[:-1])]
    assert [Path(value(argv, "--data")).name for argv in first] == ["multigrid-4"] + ["multigrid-8"] * 3
    assert not any("--resume" in argv for argv in first)
    model = json.loads((runs / "flam-anchored" / "config.json").read_text())["config"]
    assert model["factorizer"]["n_slots"] == 10 and model["factorizer"]["carry_slots"]
    assert model["hard_anchor"] and model["change_weight"] == 0 and model["split_every"] == 0
    weights = (runs / "flam-anchored" / "model.safetensors").read_bytes()

    # Run again: every stage resumes, finds its steps done, and the model is left as it was.
    second = run()
    assert all("--resume" in argv for argv in second) and len(second) == 4
    assert (runs / "flam-anchored" / "model.safetensors").read_bytes() == weights
