"""Per-frame PSNR and SSIM of predicted against ground-truth video, from torchmetrics' functional API."""

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

# Identical frames have infinite PSNR; capping at 100 dB (MSE 1e-10 on [0, 1] pixels) keeps means finite.
PSNR_CAP_DB = 100.0


def as_float_frames(frames: Tensor | np.ndarray) -> Tensor:
    """Float [T,3,H,W] in [0, 1] from either float [T,3,H,W] in [0, 1] or uint8 [T,H,W,3] (tensor or array)."""
    x = torch.as_tensor(frames)
    if x.dtype == torch.uint8:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be [T,H,W,3], got {tuple(x.shape)}")
        return x.permute(0, 3, 1, 2).float() / 255.0  # [T,3,H,W]
    if not x.is_floating_point():
        raise ValueError(f"frames must be uint8 [T,H,W,3] or float [T,3,H,W], got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"float frames must be [T,3,H,W], got {tuple(x.shape)}")
    return x.float()


def _pair(pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Both videos as float [T,3,H,W] on the prediction's device, with matching shapes."""
    p, t = as_float_frames(pred), as_float_frames(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
    return p, t.to(p.device)


@torch.inference_mode()
def psnr(pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> Tensor:
    """PSNR in dB per frame, [T], capped at PSNR_CAP_DB; pixels in [0, 1] (data range 1)."""
    p, t = _pair(pred, target)  # [T,3,H,W]
    values = peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))  # [T]
    return values.clamp(max=PSNR_CAP_DB)


@torch.inference_mode()
def ssim(pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> Tensor:
    """SSIM per frame, [T]: Gaussian window 11, sigma 1.5, data range 1 (the standard settings)."""
    p, t = _pair(pred, target)  # [T,3,H,W]
    return structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")  # [T]
