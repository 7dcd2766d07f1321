"""`flam experiment scaling|correlated` on tiny settings: data, equal-budget training, evaluation, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flam.main import main

TINY = [
    "--preset",
    "tiny",
    "--tokenizer-steps",
    "2",
    "--lam-steps",
    "2",
    "--data-episodes",
    "20",
    "--episode-steps",
    "6",
    "--horizon",
    "4",
    "--fvd-episodes",
    "0",
    "--edit-episodes",
    "1",
    "--probe-iterations",
    "10",
    "--action-size",
    "12",
    "--quiet",
]


def test_scaling_trains_both_models_per_agent_count_with_one_budget_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "scaling"
    assert main(["experiment", "scaling", "--out", str(out), "--agents", "1", "2", *TINY]) == 0
    record = json.loads((out / "scaling.json").read_text())
    assert [r["agents"] for r in record["results"]] == [1, 2]
    for row in record["results"]:
        flam, mono = row["flam"], row["monolithic"]
        assert row["slots"] == row["agents"] + 2 == flam["checkpoint"]["n_slots"]
        assert flam["checkpoint"]["action_dim"] == 12 // row["slots"] and mono["checkpoint"]["action_dim"] == 12
        assert flam["data"]["n_agents"] == row["agents"] and flam["data"]["split"] == "test"
        for arch in ("flam", "monolithic"):
            training = json.loads(
                (out / "checkpoints" / f"multigrid-{row['agents']}" / arch / "training.json").read_text()
            )
            assert training["step"] == training["steps"] == 2
    readme = (out / "report" / "README.md").read_text()
    assert "tokenizer 2 steps, each latent action model 2 steps" in readme
    assert "| 2 | 4 |" in readme and "copy-frame PSNR" in readme  # 2 agents, K = 4
    assert (out / "report" / "scaling-psnr.png").stat().st_size > 1000
    assert (out / "report" / "agents-2" / "README.md").is_file()


def test_correlated_reports_which_slot_binds_which_agent(tmp_path: Path) -> None:
    out = tmp_path / "correlated"
    assert main(["experiment", "correlated", "--out", str(out), *TINY]) == 0
    record = json.loads((out / "correlated.json").read_text())
    verdict = record["verdict"]
    assert verdict["applicable"] is True and verdict["correlated_agents"] == [0, 1]
    assert len(verdict["dominant_slot"]) == 4 and all(0 <= s < 3 for s in verdict["dominant_slot"])
    assert isinstance(verdict["as_in_the_paper"], bool)
    assert record["flam"]["checkpoint"]["n_slots"] == 3
    assert (
        record["flam"]["data"]["command"].endswith("--persistence 0.7")
        and "--correlated 2" in record["flam"]["data"]["command"]
    )
    assert (out / "report" / "binding.png").is_file() and (out / "report" / "evaluation" / "README.md").is_file()
    assert not (out / "checkpoints" / "multigrid-4-correlated-2" / "monolithic").exists()

    # A second run finds every stage complete and retrains nothing.
    weights = out / "checkpoints" / "multigrid-4-correlated-2" / "flam" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert main(["experiment", "correlated", "--out", str(out), *TINY]) == 0
    assert weights.stat().st_mtime_ns == before


def test_bad_experiment_settings_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["experiment", "scaling", "--out", str(tmp_path), "--agents", "0", *TINY]) == 2
    assert "--agents: expected" in capsys.readouterr().err
    assert main(["experiment", "correlated", "--out", str(tmp_path), "--correlated", "1", *TINY]) == 2
