"""Where an edit changes decoded frames: edit locality, edit effect, and the share of change on a mask.

Frames are [T,H,W,3], uint8 (0..255) or float in [0, 1]; both are compared in 0..255 units. Masks are bool
[T,H,W] (or [M,T,H,W], combined by union). Change is the absolute pixel difference summed over RGB.
"""

import numpy as np
import scipy.ndimage
import torch

Array = np.ndarray | torch.Tensor

EFFECT_THRESHOLD = 8.0  # mean absolute change (0..255, averaged over RGB) that counts as visible
EFFECT_DILATION = 2  # pixels the target mask grows by, so a small move off the mask still counts


def _frames_255(frames: Array, name: str) -> np.ndarray:
    """Frames [T,H,W,3] as float64 in 0..255 units."""
    x = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be frames [T,H,W,3], got shape {x.shape}")
    return x.astype(np.float64) if x.dtype == np.uint8 else x.astype(np.float64) * 255.0


def _mask(mask: Array, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Bool [T,H,W] from [T,H,W] or [M,T,H,W] (union over M)."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    m = m.astype(bool)
    if m.ndim == 4:
        m = m.any(axis=0)  # [T,H,W], union of the M masks
    if m.shape != shape:
        raise ValueError(f"{name} must be [T,H,W] = {list(shape)} (or [M,T,H,W]), got shape {m.shape}")
    return m


def pixel_change(base: Array, edited: Array) -> np.ndarray:
    """Absolute change per pixel [T,H,W], summed over RGB, in 0..255 units."""
    a, b = _frames_255(base, "base"), _frames_255(edited, "edited")
    if a.shape != b.shape:
        raise ValueError(f"base {a.shape} and edited {b.shape} frames differ in shape")
    return np.abs(b - a).sum(axis=-1)  # [T,H,W]


def change_share_on(mask: Array, base: Array, edited: Array) -> float:
    """Share of the total absolute change that lies inside mask [T,H,W]; nan when nothing changed."""
    change = pixel_change(base, edited)  # [T,H,W]
    total = change.sum()
    if total == 0.0:
        return float("nan")
    return float(change[_mask(mask, change.shape, "mask")].sum() / total)


def edit_locality(base: Array, edited: Array, other_entities_mask: Array) -> float:
    """Share of the change that falls outside the other entities' masks: 1.0 = perfectly local, nan = no change.

    nan marks a dead edit (nothing changed); callers count it with edit_effect, never as local.
    """
    return 1.0 - change_share_on(other_entities_mask, base, edited)


def edit_effect(
    base: Array,
    edited: Array,
    target_mask: Array,
    threshold: float = EFFECT_THRESHOLD,
    dilation: int = EFFECT_DILATION,
) -> bool:
    """Whether the edit visibly changes the target: in some frame, the mean change on its dilated mask > threshold.

    The change there is averaged over RGB (0..255 units) and over the pixels of target_mask [T,H,W] grown by
    `dilation` pixels in H and W; frames where the target is absent are skipped (no frame: False).
    """
    change = pixel_change(base, edited) / 3.0  # [T,H,W], mean over RGB
    mask = _mask(target_mask, change.shape, "target_mask")  # [T,H,W]
    if dilation > 0:
        size = 2 * dilation + 1
        mask = scipy.ndimage.binary_dilation(mask, structure=np.ones((1, size, size), dtype=bool))  # [T,H,W]
    area = mask.sum(axis=(1, 2))  # [T]
    present = area > 0
    if not present.any():
        return False
    mean_change = (change * mask).sum(axis=(1, 2))[present] / area[present]  # [T'] per frame with the target
    return bool(mean_change.max() > threshold)
