"""The evaluation protocol's glue on cases with a known answer: windows, masks, cells, bindings, edits."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_dataset
from torch import nn

from flam.models.evaluation.protocol import (
    EvalConfig,
    edit_scores,
    entity_cells,
    evaluate,
    paired_psnr_difference,
    slot_binding,
    slot_dci,
)
from flam.models.lam import Inference, LAMState
from flam.models.metrics.video import PSNR_CAP_DB
from flam.models.train import token_masks
from flam.models.world_model import WorldModel, load_world_model
from flam.worlds.dataset import Dataset

FAST = dict(fvd_episodes=0, probe_iterations=10)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """30 episodes of 13 frames, 2 agents: 3 test episodes."""
    return Dataset.open(make_dataset(tmp_path_factory.mktemp("eval") / "multigrid-2", episodes=30))


class _PixelTokenizer(nn.Module):
    """A lossless 'tokenizer': the feature grid is the frame itself."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(image_size=image_size)
        self.fsq = SimpleNamespace(snap=lambda z: z)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


class _OracleLAM(nn.Module):
    """A 'latent action model' whose action is the whole next frame: a perfect predictor given inferred actions."""

    n_slots = 1

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.action_dim = 3 * image_size * image_size

    def infer(self, z: torch.Tensor) -> Inference:
        b, t, _, h, w = z.shape
        actions = z[:, 1:].flatten(2)[:, :, None]  # [B, T-1, 1, 3*H*W]: the next frame
        return Inference(z.new_zeros(b, t, 1, 0), z.new_ones(b, t, 1, h, w), actions, torch.ones_like(actions))

    def start(self, z: torch.Tensor) -> LAMState:
        b, _, _, h, w = z.shape
        return LAMState(z[:, -1], z.new_zeros(b, 1, 0), z.new_ones(b, 1, h, w), None)

    def predict(self, state: LAMState, actions: torch.Tensor) -> torch.Tensor:
        return actions[:, 0].reshape(state.z.shape)

    def observe(self, state: LAMState, z: torch.Tensor) -> LAMState:
        return LAMState(z, state.slots, state.masks, None)


def _oracle(image_size: int) -> WorldModel:
    identity = {"name": "oracle", "kind": "monolithic", "weights_sha256": "-", "tokenizer_sha256": "-"}
    header = {"kind": "monolithic"}
    return WorldModel(_PixelTokenizer(image_size), _OracleLAM(image_size), header, identity, torch.device("cpu"))


@pytest.mark.parametrize("context", [1, 3])
def test_a_perfect_model_scores_the_psnr_cap_on_every_step(dataset: Dataset, context: int) -> None:
    config = EvalConfig(horizon=5, context=context, **FAST)
    result = evaluate(_oracle(dataset.image_size), dataset, config)
    s = result.summary
    assert s["psnr"] == PSNR_CAP_DB and s["psnr_per_step"] == [PSNR_CAP_DB] * 5
    assert s["tokenizer_psnr"] == PSNR_CAP_DB
    assert s["ssim"] == pytest.approx(1.0, abs=1e-3) and s["st_lpips"] == pytest.approx(0.0, abs=1e-6)
    assert s["dci"]["applicable"] is False and "monolithic" in s["dci"]["reason"]
    truth = np.stack([dataset.frames(e)[: context + 5] for e in s["data"]["episodes"]])
    np.testing.assert_array_equal(result.examples.truth, truth)
    np.testing.assert_array_equal(result.examples.predicted, truth[:, context:])


def test_a_model_that_repeats_the_context_frame_scores_below_the_cap(dataset: Dataset) -> None:
    model = _oracle(dataset.image_size)
    model.lam.predict = lambda state, actions: state.z  # the world never moves
    s = evaluate(model, dataset, EvalConfig(horizon=8, **FAST)).summary
    assert s["psnr"] < 60.0
    assert s["psnr"] == pytest.approx(s["copy_psnr"], abs=1e-4)  # it is exactly the copy reference
    assert len(s["psnr_per_step"]) == 8


def test_paired_difference_of_a_model_with_itself_is_zero(dataset: Dataset) -> None:
    run = evaluate(_oracle(dataset.image_size), dataset, EvalConfig(horizon=3, **FAST))
    pair = paired_psnr_difference(run, run)
    assert pair["psnr_difference"] == 0.0 and pair["episodes"] == run.summary["n_episodes"]


def test_entity_cells_map_pixel_positions_to_probe_grid_cells() -> None:
    positions = np.array([[[4.0, 4.0], [4.0, 60.0], [60.0, 4.0], [63.9, 63.9], [8.0, 15.9]]])  # [1, 5, 2]
    np.testing.assert_array_equal(entity_cells(positions, 64, 8), [[0, 7, 56, 63, 9]])


def test_slot_binding_recovers_which_slot_holds_which_entity(dataset: Dataset) -> None:
    episodes = dataset.split("test")
    masks = []
    for e in episodes:
        tokens = torch.from_numpy(token_masks(dataset.ground_truth(e).entity_map, 8, 2))  # [T, 2, 8, 8]
        owned = (tokens > 0).float()  # each entity's tokens (agents never share a cell)
        rest = 1.0 - owned.sum(dim=1)  # [T, 8, 8]
        masks.append(torch.stack([owned[:, 1], rest, owned[:, 0]], dim=1))  # slot 0: entity 1, slot 2: entity 0
    binding = slot_binding(torch.stack(masks), dataset, episodes)
    assert binding["slot_entity"] == [1, None, 0]
    assert binding["dominant_slot"] == [2, 0]
    share = np.asarray(binding["share"])
    np.testing.assert_allclose(share.sum(axis=0), 1.0)
    assert share[2, 0] > 0.99 and share[0, 1] > 0.99
    assert binding["handover"] == [0.0, 0.0]  # every slot keeps its entity
    swapped = torch.stack(masks)
    swapped[0, 3:] = swapped[0, 3:, [2, 1, 0]]  # in the first episode slots 0 and 2 trade entities at frame 3
    transitions = sum(len(dataset.ground_truth(e).entity_map) - 1 for e in episodes)
    assert slot_binding(swapped, dataset, episodes)["handover"] == pytest.approx([1 / transitions] * 2)


def _window_masks(dataset: Dataset, episodes: list[int], config: EvalConfig) -> np.ndarray:
    """bool [V, N, H, Hpx, Wpx]: each entity's ground-truth mask on the predicted frames."""
    maps = np.stack(
        [dataset.ground_truth(e).entity_map[config.context : config.context + config.horizon] for e in episodes]
    )  # [V, H, Hpx, Wpx]
    return maps[:, None] == np.arange(1, dataset.n_entities + 1)[None, :, None, None, None]


def test_edits_that_change_only_their_own_entity_are_local_and_effective(dataset: Dataset) -> None:
    config = EvalConfig(horizon=6, context=2)
    episodes = dataset.split("test")
    base = np.stack([dataset.frames(e)[2:8] for e in episodes])  # [V, H, ...] stands for the unedited rollout
    masks = _window_masks(dataset, episodes, config)  # [V, N, H, Hpx, Wpx]
    # Slot 0 holds entity 1, slot 1 entity 0, slot 2 the background; slot 3 changes nothing.
    edited = np.repeat(base[:, None], 4, axis=1).copy()  # [V, K, H, ...]
    edited[:, 0][masks[:, 1]] = (255, 255, 255)
    edited[:, 1][masks[:, 0]] = (255, 255, 255)
    background = ~masks.any(axis=1)  # [V, H, Hpx, Wpx]
    edited[:, 2][background] = 200
    s = edit_scores(base, edited, dataset, episodes, [1, 0, None, None], config)
    assert s["edit_locality"] == 1.0 and s["edit_effect"] == 1.0
    per_slot = s["edits"]["per_slot"]
    assert [p["entity"] for p in per_slot] == [1, 0, None, None]
    assert s["edits"]["background"]["slots"] == [2, 3] and s["edits"]["background"]["locality"] == 1.0
    assert per_slot[3]["changed"] == 0.0 and per_slot[3]["locality"] is None


def test_an_edit_that_changes_the_other_entity_is_not_local(dataset: Dataset) -> None:
    config = EvalConfig(horizon=6, context=2)
    episodes = dataset.split("test")
    base = np.stack([dataset.frames(e)[2:8] for e in episodes])
    masks = _window_masks(dataset, episodes, config)
    edited = np.repeat(base[:, None], 2, axis=1).copy()  # [V, 2, H, ...]
    edited[:, 0][masks[:, 1]] = (255, 255, 255)  # slot 0 is matched to entity 0 but moves entity 1
    edited[:, 1] = np.minimum(base.astype(np.int16) + 10, 255).astype(np.uint8)  # slot 1 changes every pixel
    s = edit_scores(base, edited, dataset, episodes, [0, 1], config)
    per_slot = s["edits"]["per_slot"]
    assert per_slot[0]["locality"] == 0.0 and per_slot[0]["effect"] == 0.0
    share_on_entity_0 = masks[:, 0].mean()
    assert per_slot[1]["locality"] == pytest.approx(1.0 - share_on_entity_0, rel=1e-2)
    assert s["edit_effect"] == pytest.approx(0.5)


def test_dci_of_slots_that_copy_entity_cells_recovers_the_shuffled_slot_order(dataset: Dataset) -> None:
    episodes = dataset.split("train")
    cells = np.stack([entity_cells(dataset.ground_truth(e).positions, 64, 8) for e in episodes])  # [V, T, 2]
    rows, cols = cells // 8, cells % 8
    coords = np.stack([rows, cols, rows * rows, cols * cols, rows * cols], axis=-1).astype(np.float32)  # [V, T, 2, 5]
    noise = np.random.default_rng(0).normal(size=coords.shape[:2] + (1, 5)).astype(np.float32)
    slots = np.concatenate([coords[:, :, [1]], noise, coords[:, :, [0]]], axis=2)  # slot 0: entity 1, slot 2: entity 0
    result = slot_dci(torch.from_numpy(slots), dataset, episodes, EvalConfig(probe_iterations=60), lambda message: None)
    assert sorted(map(tuple, result["matching"])) == [(0, 1), (2, 0)]
    assert result["disentanglement"] > 0.8 and result["completeness"] > 0.8
    assert result["informativeness"] > result["random"]["informativeness"] + 0.2
    importance = np.asarray(result["importance"])
    assert importance[1].sum() == 0.0  # the noise slot explains nothing
    assert len(result["probe"]["l2"]) == 3 and len(result["probe"]["l2"][0]) == 2  # a penalty per (slot, entity)
    two = slot_dci(torch.from_numpy(slots[:2]), dataset, episodes[:2], EvalConfig(), lambda message: None)
    assert two["applicable"] is False and "3 or more" in two["reason"]


def test_dci_over_the_action_slots_leaves_out_a_background_slot_that_reads_every_entity(dataset: Dataset) -> None:
    episodes = dataset.split("train")
    cells = np.stack([entity_cells(dataset.ground_truth(e).positions, 64, 8) for e in episodes])  # [V, T, 2]
    onehot = np.eye(64, dtype=np.float32)[cells]  # [V, T, 2, 64]: a sharp code of each entity's cell
    background = onehot.sum(axis=2, keepdims=True)  # [V, T, 1, 64]: where the holes are, both entities mixed
    slots = np.concatenate([onehot[:, :, [1]], background, onehot[:, :, [0]]], axis=2)  # slot 1: the background
    config = EvalConfig(probe_iterations=60)
    rates = torch.tensor([2.0, 0.0, 2.0])  # the background slot carries no action
    result = slot_dci(torch.from_numpy(slots), dataset, episodes, config, lambda message: None, rates)
    sub = result["on_action_slots"]
    assert sub["slots"] == [0, 2]
    assert sorted(map(tuple, sub["matching"])) == [(0, 1), (2, 0)]  # in the model's slot numbers
    assert sub["disentanglement"] > 0.9 and sub["completeness"] > 0.9
    assert result["completeness"] < sub["completeness"] - 0.1  # the background slot shares every entity
    every_slot_acts = slot_dci(torch.from_numpy(slots), dataset, episodes, config, lambda m: None, torch.ones(3))
    assert "on_action_slots" not in every_slot_acts  # nothing to leave out
    one_acts = slot_dci(torch.from_numpy(slots), dataset, episodes, config, lambda m: None, torch.tensor([2.0, 0, 0]))
    assert "on_action_slots" not in one_acts  # one slot: completeness over one slot would be 1 whatever it reads


def test_reading_the_whole_episode_gives_the_windows_actions(tiny_checkpoints: Path, tiny_dataset: Path) -> None:
    model = load_world_model(tiny_checkpoints / "tiny" / "flam", torch.device("cpu"))
    frames = torch.from_numpy(Dataset.open(tiny_dataset).frames_for([0, 1]))  # [2, T, ...]
    _, whole = model.analyse(frames)
    _, window = model.analyse(frames[:, :6])
    torch.testing.assert_close(whole.actions[:, :5], window.actions, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(whole.masks[:, :6], window.masks, atol=1e-5, rtol=1e-4)


def test_bad_settings_are_refused_with_the_field_named(dataset: Dataset) -> None:
    with pytest.raises(ValueError, match="horizon"):
        evaluate(_oracle(dataset.image_size), dataset, EvalConfig(horizon=0))
    with pytest.raises(ValueError, match="needs 20"):
        evaluate(_oracle(dataset.image_size), dataset, EvalConfig(horizon=19, context=1))
    assert math.isfinite(evaluate(_oracle(64), dataset, EvalConfig(horizon=12, **FAST)).summary["psnr"])
