"""Edit locality, edit effect and change share on synthetic edits with known answers."""

import math

import numpy as np
import pytest
import torch

from flam.models.metrics.locality import change_share_on, edit_effect, edit_locality, pixel_change

T, H, W = 4, 16, 16


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 frames [T,H,W,3] with a target square and two other entities; their masks [T,H,W] and [2,T,H,W]."""
    frames = np.full((T, H, W, 3), 20, np.uint8)
    target, others = np.zeros((T, H, W), bool), np.zeros((2, T, H, W), bool)
    target[:, 2:6, 2:6] = True
    others[0, :, 10:14, 2:6] = True
    others[1, :, 10:14, 10:14] = True
    frames[target] = (200, 30, 30)
    frames[others[0]] = (30, 200, 30)
    frames[others[1]] = (30, 30, 200)
    return frames, target, others


def _move_target(frames: np.ndarray) -> np.ndarray:
    """The target square moved 3 pixels right from frame 1 on; nothing else changes."""
    edited = frames.copy()
    edited[1:, 2:6, 2:6] = 20
    edited[1:, 2:6, 5:9] = (200, 30, 30)
    return edited


def test_a_perfectly_local_edit_scores_one() -> None:
    frames, target, others = _scene()
    edited = _move_target(frames)
    assert edit_locality(frames, edited, others) == 1.0
    assert edit_effect(frames, edited, target)
    assert change_share_on(target, frames, edited) < 1.0  # the square also moved off its old mask


def test_a_global_edit_scores_the_share_of_pixels_outside_the_masks() -> None:
    frames, _, others = _scene()
    edited = frames + np.uint8(10)  # every pixel and channel shifts by the same amount
    union = others.any(axis=0)
    expected = 1.0 - union.mean()
    assert math.isclose(edit_locality(frames, edited, others), expected, rel_tol=1e-12)
    assert math.isclose(change_share_on(union, frames, edited), union.mean(), rel_tol=1e-12)


def test_an_edit_that_only_moves_other_entities_scores_zero() -> None:
    frames, target, others = _scene()
    edited = frames.copy()
    edited[others[1]] = (30, 30, 120)
    assert edit_locality(frames, edited, others) == 0.0
    assert not edit_effect(frames, edited, target)


def test_no_change_is_nan_and_no_effect() -> None:
    frames, target, others = _scene()
    assert math.isnan(edit_locality(frames, frames.copy(), others))
    assert math.isnan(change_share_on(target, frames, frames))
    assert not edit_effect(frames, frames.copy(), target)


def test_effect_threshold_and_dilation() -> None:
    frames, target, _ = _scene()
    faint = frames.copy()
    faint[target] += np.uint8(2)  # 2 units on the target: visible only to a tiny threshold
    assert not edit_effect(frames, faint, target, dilation=0)
    assert edit_effect(frames, faint, target, threshold=1.0, dilation=0)
    assert not edit_effect(frames, faint, target, threshold=1.0)  # 16 changed of 64 dilated pixels: mean 0.5
    beside = frames.copy()
    beside[:, 2:6, 7] = 255  # a change one pixel beside the target's mask
    assert not edit_effect(frames, beside, target, dilation=0)
    assert edit_effect(frames, beside, target, dilation=2)
    assert not edit_effect(frames, beside, np.zeros_like(target))  # target absent everywhere


def test_float_frames_and_tensors_agree_with_uint8() -> None:
    frames, target, others = _scene()
    edited = _move_target(frames)
    as_float = torch.from_numpy(frames / 255.0)
    edited_float = torch.from_numpy(edited / 255.0)
    assert np.allclose(pixel_change(as_float, edited_float), pixel_change(frames, edited))
    assert edit_locality(as_float, edited_float, torch.from_numpy(others)) == 1.0
    assert edit_effect(as_float, edited_float, torch.from_numpy(target))


def test_bad_shapes_raise() -> None:
    frames, target, _ = _scene()
    with pytest.raises(ValueError, match="target_mask"):
        edit_effect(frames, frames, target[:, :8])
    with pytest.raises(ValueError, match="differ in shape"):
        edit_locality(frames, frames[:2], target)
    with pytest.raises(ValueError, match=r"\[T,H,W,3\]"):
        change_share_on(target, frames[..., 0], frames[..., 0])
