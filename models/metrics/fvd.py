"""Fréchet Video Distance (Unterthiner et al. 2018) with the Kinetics-400 I3D port in `i3d.py`.

As the reference TF implementation: frames resized to 224×224 with TF1's bilinear resize (no half-pixel
centres), scaled to [-1, 1], embedded as the 400 I3D logits, and the Fréchet distance of Gaussians fitted to
the real and generated embeddings. FVD from a few dozen videos is biased upwards; compare runs of equal size only.
"""

import numpy as np
import torch
from torch import Tensor

from flam.models.metrics.i3d import INPUT_SIDE, InceptionI3d, load_i3d


def tf_bilinear_matrix(in_size: int, out_size: int) -> Tensor:
    """[out,in] weights of TF1 `resize_bilinear` (align_corners=False, half_pixel_centers=False) along one axis."""
    src = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)  # [out]
    lo = src.floor().long().clamp(max=in_size - 1)  # [out]
    hi = (lo + 1).clamp(max=in_size - 1)  # [out]
    frac = src - lo  # [out]
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)  # [out,in]
    weights[torch.arange(out_size), lo] += 1.0 - frac
    weights[torch.arange(out_size), hi] += frac
    return weights.float()


def preprocess(videos: Tensor) -> Tensor:
    """uint8 [V,T,H,W,3] -> float [V,3,T,224,224] in [-1, 1], resized as the reference FVD does."""
    if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"FVD needs uint8 videos [V,T,H,W,3], got {videos.dtype} {tuple(videos.shape)}")
    rows = tf_bilinear_matrix(videos.shape[2], INPUT_SIDE).to(videos.device)  # [224,H]
    cols = tf_bilinear_matrix(videos.shape[3], INPUT_SIDE).to(videos.device)  # [224,W]
    x = videos.float()  # [V,T,H,W,3], 0..255
    x = torch.einsum("ih,vthwc,jw->vctij", rows, x, cols)  # [V,3,T,224,224]
    return 2.0 * x / 255.0 - 1.0


@torch.inference_mode()
def i3d_logits(videos: Tensor | np.ndarray, model: InceptionI3d | None = None, batch_size: int = 8) -> Tensor:
    """I3D Kinetics-400 logits [V,400] (float64, CPU) of uint8 videos [V,T,H,W,3], T >= 9, in batches."""
    model = model if model is not None else load_i3d("cpu")
    device = next(model.parameters()).device
    videos = torch.as_tensor(videos)
    out = [
        model(preprocess(videos[i : i + batch_size].to(device))).double().cpu()  # [b,400]
        for i in range(0, videos.shape[0], batch_size)
    ]
    return torch.cat(out)  # [V,400]


def _trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
    """tr sqrtm(A B) for symmetric PSD A, B, as the sum of the square roots of the eigenvalues of sqrt(A) B sqrt(A).

    That matrix is symmetric PSD with the same eigenvalues as A B, so two `eigh` calls replace a general matrix
    square root (~0.05 s instead of seconds for 400×400) and need no jitter when A B is singular."""
    values, vectors = np.linalg.eigh(cov_a)  # [E], [E,E]
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T  # [E,E]
    inner = root_a @ cov_b @ root_a  # [E,E]
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets [V,E]."""
    mu_r, mu_f = real.mean(axis=0), fake.mean(axis=0)  # [E]
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)  # [E,E]
    diff = mu_r - mu_f
    return float(diff @ diff + np.trace(cov_r) + np.trace(cov_f) - 2.0 * _trace_sqrt_product(cov_r, cov_f))


def frechet_video_distance(
    real: Tensor | np.ndarray, fake: Tensor | np.ndarray, device: str | torch.device = "cpu", batch_size: int = 8
) -> float:
    """FVD between uint8 video sets real [V,T,H,W,3] and fake [V',T,H,W,3] (V, V' >= 2, T >= 9), any H×W."""
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"FVD needs at least 2 videos per set, got {real.shape[0]} real and {fake.shape[0]} fake")
    model = load_i3d(device)
    emb_real = i3d_logits(real, model, batch_size).numpy()  # [V,400]
    emb_fake = i3d_logits(fake, model, batch_size).numpy()  # [V',400]
    return frechet_distance(emb_real, emb_fake)
