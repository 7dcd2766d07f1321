"""The one rollout path on a tiny trained model set: determinism, prefix reuse, edits, checkpoint round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from flam.models.actions import ActionEdit, apply_edits, base_actions, first_difference
from flam.models.checkpoint import WEIGHTS_FILE, CheckpointError, save_checkpoint
from flam.models.model_set import discover
from flam.models.registry import load_model
from flam.models.rollout import rollout
from flam.models.train import train_tokenizer
from flam.models.world_model import load_world_model
from flam.worlds.dataset import Dataset


@pytest.fixture(scope="module", params=["flam", "monolithic"])
def world_model(request: pytest.FixtureRequest, tiny_checkpoints: Path):
    return load_world_model(tiny_checkpoints / "tiny" / request.param, torch.device("cpu"))


@pytest.fixture(scope="module")
def clip(tiny_checkpoints: Path) -> torch.Tensor:
    episodes = Dataset.open(tiny_checkpoints / "tiny" / "episodes")
    return torch.from_numpy(episodes.frames(0))[None]  # [1, T, H, W, 3]


def test_discover_lists_both_models(tiny_checkpoints: Path) -> None:
    names = [entry.name for entry in discover(tiny_checkpoints)]
    assert names == ["tiny/flam", "tiny/monolithic"]


def test_rollout_is_deterministic_and_shaped(world_model, clip: torch.Tensor) -> None:
    z, inference = world_model.analyse(clip)
    horizon = 5
    actions = base_actions(
        "inferred", horizon, world_model.n_slots, world_model.action_dim, inferred=inference.actions[0, 1:]
    )[None]
    first = rollout(world_model, world_model.start(z[:, :2]), actions)
    second = rollout(world_model, world_model.start(z[:, :2]), actions)
    assert first.frames.shape == (1, horizon, 64, 64, 3) and first.frames.dtype == torch.uint8
    assert first.masks.shape[:3] == (1, horizon, world_model.n_slots)
    torch.testing.assert_close(first.masks.sum(dim=2), torch.ones_like(first.masks[:, :, 0]))
    assert torch.equal(first.frames, second.frames)
    assert len(first.states) == horizon + 1


def test_reroll_from_a_step_reuses_the_prefix_and_matches_a_full_rollout(world_model, clip: torch.Tensor) -> None:
    z, _ = world_model.analyse(clip)
    start = world_model.start(z[:, :1])
    k, a = world_model.n_slots, world_model.action_dim
    plan = base_actions("prior", 6, k, a, seed=3)
    edited = apply_edits(plan, [ActionEdit(slot=k - 1, steps=(3, 4, 5), delta=tuple([2.0] * a))])
    j = first_difference(plan, edited)
    assert j == 3
    base = rollout(world_model, start, plan[None])
    reused = rollout(world_model, start, edited[None], prefix=base, from_step=j)
    full = rollout(world_model, start, edited[None])
    assert torch.equal(reused.frames, full.frames)
    assert torch.equal(reused.frames[:, :j], base.frames[:, :j])
    with pytest.raises(ValueError, match="other actions"):
        rollout(world_model, start, edited[None], prefix=base, from_step=5)


def test_prior_actions_depend_only_on_the_seed() -> None:
    assert torch.equal(base_actions("prior", 4, 3, 2, seed=1), base_actions("prior", 4, 3, 2, seed=1))
    assert not torch.equal(base_actions("prior", 4, 3, 2, seed=1), base_actions("prior", 4, 3, 2, seed=2))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (ActionEdit(slot=9, delta=(0.0, 0.0)), "slot 9 is out of range"),
        (ActionEdit(slot=0, delta=(0.0,)), "has 1 values"),
        (ActionEdit(slot=0, set=(float("nan"), 0.0)), "NaN"),
        (ActionEdit(slot=0, steps=(7,), delta=(0.0, 0.0)), "step 7 is out of range"),
        (ActionEdit(slot=0), "exactly one"),
    ],
)
def test_bad_edits_are_clear_errors(edit: ActionEdit, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_edits(torch.zeros(4, 3, 2), [edit])


def test_checkpoint_round_trip_is_bit_exact(tiny_checkpoints: Path, tmp_path: Path) -> None:
    model, header = load_model(tiny_checkpoints / "tiny" / "flam", ("flam",))
    save_checkpoint(tmp_path / "copy", "flam", model.config, model)
    again, _ = load_model(tmp_path / "copy", ("flam",))
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert (tmp_path / "copy" / WEIGHTS_FILE).read_bytes() == (tmp_path / "copy" / WEIGHTS_FILE).read_bytes()


def test_truncated_or_mismatched_checkpoints_are_clear_errors(tiny_checkpoints: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoints / "tiny" / "flam", broken)
    data = (broken / WEIGHTS_FILE).read_bytes()
    (broken / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(broken, ("flam",))
    with pytest.raises(CheckpointError, match="expected tokenizer"):
        load_model(tiny_checkpoints / "tiny" / "flam", ("tokenizer",))
    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_checkpoints / "tiny" / "flam", mismatched)
    shutil.copy(tiny_checkpoints / "tiny" / "monolithic" / WEIGHTS_FILE, mismatched / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_model(mismatched, ("flam",))
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load_model(tmp_path / "nowhere", ("flam",))


def test_a_lam_copied_into_a_model_set_finds_the_sets_tokenizer_by_hash(
    tiny_checkpoints: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """Trained with --out elsewhere, its recorded tokenizer path dangles in the set; the sibling is used only when
    its weights are the ones the LAM was trained on."""
    set_dir = tmp_path / "set"
    shutil.copytree(tiny_checkpoints / "tiny" / "flam", set_dir / "flam")
    shutil.copytree(tiny_checkpoints / "tiny" / "tokenizer", set_dir / "tokenizer")
    config = json.loads((set_dir / "flam" / "config.json").read_text())
    config["tokenizer"]["path"] = "../../runs/elsewhere/tokenizer"
    (set_dir / "flam" / "config.json").write_text(json.dumps(config))
    world = load_world_model(set_dir / "flam", torch.device("cpu"))
    assert world.identity["tokenizer_sha256"] == config["tokenizer"]["sha256"]

    other = tmp_path / "other"
    shutil.copytree(set_dir / "flam", other / "flam")
    train_tokenizer(tiny_dataset, other / "tokenizer", preset="tiny", steps=1, log=lambda message: None)
    with pytest.raises(CheckpointError, match="different tokenizer"):
        load_world_model(other / "flam", torch.device("cpu"))
