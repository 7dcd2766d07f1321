"""`flam eval` and `flam compare` end to end on the tiny checkpoints (random-quality weights: no quality asserted)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset

from flam.main import main
from flam.models.lam import ACTIVE_RATE
from flam.models.model_set import discover
from flam.worlds.dataset import Dataset, write_dataset
from flam.worlds.episode import Episode

FAST = ["--fvd-episodes", "0", "--probe-iterations", "20", "--quiet"]
KEYS = ("psnr", "ssim", "st_lpips", "fvd", "psnr_per_step", "tokenizer_psnr", "dci", "edit_locality", "edit_effect")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same world as the tiny checkpoints were trained on, 30 episodes: 3 held-out test episodes."""
    return make_dataset(tmp_path_factory.mktemp("eval-cli") / "multigrid-2", episodes=30)


@pytest.fixture
def model_set(tiny_checkpoints: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny set (eval writes into checkpoint folders)."""
    return Path(shutil.copytree(tiny_checkpoints / "tiny", tmp_path / "checkpoints" / "tiny"))


def _linked_images(readme: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme.read_text())


def test_eval_writes_the_json_contract_a_report_and_a_model_card(
    model_set: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, report = tmp_path / "flam.json", tmp_path / "report"
    args = ["eval", "--checkpoint", str(model_set / "flam"), "--data", str(data), "--horizon", "9"]
    flags = ["--fvd-episodes", "2", "--probe-iterations", "20", "--quiet"]
    assert main([*args, "--json", str(out), "--report", str(report), "--write-card", *flags]) == 0
    s = json.loads(out.read_text())
    assert all(key in s for key in KEYS)
    assert s["n_episodes"] == 3 and s["data"]["episodes"] == Dataset.open(data).split("test")
    assert s["checkpoint"]["kind"] == "flam" and len(s["checkpoint"]["weights_sha256"]) == 64
    assert s["seconds"] > 0 and math.isfinite(s["fvd"]) and s["fvd"] >= 0 and s["fvd_videos"] == 2
    assert len(s["psnr_per_step"]) == 9 and all(0 < v <= 100 for v in s["psnr_per_step"])
    assert 0 < s["psnr"] <= 100 and 0 < s["tokenizer_psnr"] <= 100
    assert -1 <= s["ssim"] <= 1 and s["st_lpips"] >= 0
    dci = s["dci"]
    assert dci["applicable"] is True
    for key in ("disentanglement", "completeness", "informativeness"):
        assert 0 <= dci[key] <= 1 and 0 <= dci["random"][key] <= 1
    assert np.asarray(dci["importance"]).shape == (3, 2)  # K = 3 slots × 2 agents
    assert len(s["slot_rates"]) == 3 and all(r >= 0 for r in s["slot_rates"])
    assert s["action_slots"] == sum(r >= ACTIVE_RATE for r in s["slot_rates"])
    edits = s["edits"]
    assert len(edits["per_slot"]) == 3 and edits["n_episodes"] == 3
    for slot in edits["per_slot"]:  # which agent each slot's edits move; its matched agent's share is its effect
        assert len(slot["moves"]) == 2 and all(0 <= m <= 1 for m in slot["moves"])
        if slot["entity"] is not None:
            assert slot["effect"] == pytest.approx(slot["moves"][slot["entity"]])
    assert sorted(e for e in s["binding"]["slot_entity"] if e is not None) == [0, 1]
    for key in ("edit_locality", "edit_effect"):
        assert s[key] is None or 0 <= s[key] <= 1  # None: every edit of a random model may change nothing
    assert "ST-LPIPS" in s["metrics"]["st_lpips"] and "I3D" in s["metrics"]["fvd"]
    # Report: the page and every figure it links.
    readme = report / "README.md"
    images = _linked_images(readme)
    assert any(i.startswith("rollout-") for i in images) and any(i.startswith("edits-") for i in images)
    assert all((report / i).stat().st_size > 1000 for i in images)
    # Card: eval.json where the app reads it, and a card naming data, training and numbers.
    (entry,) = [e for e in discover(model_set.parent) if e.kind == "flam"]
    assert entry.evaluation() == s
    card = (model_set / "flam" / "MODEL_CARD.md").read_text()
    assert "test fixture: multigrid 2 agents" in card and "4 of 4 steps" in card and "PSNR" in card
    # Where and how the steps ran, from the training session records.
    assert re.search(r"steps 0–4 on cpu, \d+ threads?, (bf16|fp32), ", card)
    assert "| metric | FLAM |" in capsys.readouterr().out


def test_the_monolithic_baseline_has_no_correspondence_to_score(model_set: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "mono.json"
    args = ["eval", "--checkpoint", str(model_set / "monolithic"), "--data", str(data), "--horizon", "4"]
    assert main([*args, "--json", str(out), *FAST]) == 0
    s = json.loads(out.read_text())
    for key in ("dci", "edit_locality", "edit_effect"):
        assert s[key]["applicable"] is False and "monolithic" in s[key]["reason"]
    assert math.isfinite(s["psnr"])
    assert len(s["slot_rates"]) == 1  # one action for the whole scene
    assert s["action_slots"] == int(s["slot_rates"][0] >= ACTIVE_RATE)


def test_imported_video_gets_prediction_metrics_only(model_set: Path, data: Path, tmp_path: Path) -> None:
    source = Dataset.open(data)
    fields = {
        "world": "video",
        "world_params": {"size": 64, "steps": 12, "every": 1},
        "seed": 0,
        "n_agents": 0,
        "n_distractors": 0,
        "entity_colors": [],
        "action_names": None,
        "source": {"kind": "import", "videos": "test frames"},
    }
    episodes = [Episode(frames=source.frames(e)) for e in range(20)]
    imported = write_dataset(tmp_path / "imported", episodes, fields, progress=False)
    out = tmp_path / "imported.json"
    args = ["eval", "--checkpoint", str(model_set / "flam"), "--data", str(imported), "--horizon", "4"]
    assert main([*args, "--json", str(out), "--report", str(tmp_path / "report"), *FAST]) == 0
    s = json.loads(out.read_text())
    for key in ("dci", "edit_locality", "edit_effect"):
        assert s[key] == {"applicable": False, "reason": s[key]["reason"]} and "ground truth" in s[key]["reason"]
    assert "binding" not in s and math.isfinite(s["psnr"])
    assert "Not applicable" in (tmp_path / "report" / "README.md").read_text()


def test_compare_puts_both_models_in_one_table_on_the_same_episodes(
    model_set: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, report = tmp_path / "compare.json", tmp_path / "report"
    args = ["compare", "--checkpoints", str(model_set / "flam"), str(model_set / "monolithic"), "--data", str(data)]
    assert main([*args, "--horizon", "4", *FAST, "--json", str(out), "--report", str(report), "--write-card"]) == 0
    printed = capsys.readouterr().out
    assert "| metric | FLAM | monolithic |" in printed and "PSNR FLAM − monolithic" in printed
    record = json.loads(out.read_text())
    flam, mono = record["runs"]
    assert flam["data"]["episodes"] == mono["data"]["episodes"]
    assert flam["fvd"] is None and "skipped" in flam["fvd_note"]
    expected = flam["psnr"] - mono["psnr"]
    assert record["paired"][0]["psnr_difference"] == pytest.approx(expected, abs=1e-4)
    strips = [i for i in _linked_images(report / "README.md") if i.startswith("rollout-")]
    assert strips and all((report / i).is_file() for i in strips)
    for arch, summary in (("flam", flam), ("monolithic", mono)):
        assert json.loads((model_set / arch / "eval.json").read_text()) == summary
        card = (model_set / arch / "MODEL_CARD.md").read_text()
        (link,) = re.findall(r"\]\(([^)]+README\.md)\)", card)
        assert (model_set / arch / link).resolve() == (report / "README.md").resolve()


def test_user_errors_are_one_line_messages(
    model_set: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    flam = str(model_set / "flam")
    assert main(["eval", "--checkpoint", str(tmp_path), "--data", str(data)]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", flam, "--data", str(tmp_path / "none")]) == 2
    assert "not a dataset folder" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", flam, "--data", str(data), "--horizon", "0"]) == 2
    assert "--horizon: expected at least 1" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", flam, "--data", str(data), "--horizon", "30", "--quiet"]) == 2
    assert "needs 31" in capsys.readouterr().err


def test_curves_sets_training_histories_side_by_side(
    model_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report = tmp_path / "curves"
    folders = [str(model_set / "flam"), str(model_set / "monolithic")]
    assert main(["curves", "--checkpoints", *folders, "--labels", "factored", "baseline", "--report", str(report)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = (report / "README.md").read_text()
    flam_steps = [e["step"] for e in json.loads((model_set / "flam" / "training.json").read_text())["history"]]
    assert all(f"| {step} |" in text for step in flam_steps)
    assert "factored: purity" in text and "baseline: purity" in text  # the baseline's column shows "–"
    images = _linked_images(report / "README.md")
    assert "purity.png" in images and all((report / i).is_file() for i in images)

    assert main(["curves", "--checkpoints", *folders, "--labels", "same", "same", "--report", str(report)]) == 2
    assert "distinct names" in capsys.readouterr().err
    assert main(["curves", "--checkpoints", str(tmp_path), "--report", str(report)]) == 2
    assert "has no training.json" in capsys.readouterr().err
