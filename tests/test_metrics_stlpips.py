"""ST-LPIPS: the shipped weights load into our module (checksum, keys, shapes) and reproduce the package's values."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flam.models.metrics import stlpips as st
from flam.models.metrics._weights import package_file, verify_sha256

# The package's own LPIPS(net="alex", variant="shift_tolerant")(x, y, normalize=True) on _pattern(4, 64, 0.0)
# vs _pattern(4, 64, 0.7), computed once with its torchvision import stubbed out (that variant never calls it).
PACKAGE_VALUES_64 = [0.014318317174911499, 0.007014212664216757, 0.005538801662623882, 0.006118701305240393]


def _pattern(batch: int, side: int, phase: float) -> torch.Tensor:
    """Deterministic smooth images [B,3,S,S] in [0, 1]."""
    yy, xx = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    images = [
        np.stack([0.5 + 0.5 * np.sin((xx * (c + 1) + yy * (i + 2)) / 5.0 + phase) for c in range(3)])
        for i in range(batch)
    ]
    return torch.tensor(np.stack(images), dtype=torch.float32)


def test_weights_file_checksum_and_keys() -> None:
    path = package_file(st.DISTRIBUTION, st.PACKAGE, st.WEIGHTS)
    verify_sha256(path, st.WEIGHTS_SHA256)
    weights = st.read_weights()
    model_state = st.STLPIPS().state_dict()
    assert set(weights) == set(model_state)
    for key, value in weights.items():
        assert value.shape == model_state[key].shape, key
    taps = torch.tensor([1.0, 2.0, 1.0])
    for blur in ("blur1.filt", "blur2.filt", "blur3.filt"):  # the file's blur kernels are the binomial we build
        assert torch.allclose(weights[blur], (taps[:, None] * taps[None, :] / 16).expand_as(weights[blur]))


def test_checksum_mismatch_raises(tmp_path: Path) -> None:
    fake = tmp_path / "alex_shift_tolerant.pth"
    fake.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="SHA-256"):
        verify_sha256(fake, st.WEIGHTS_SHA256)


def test_matches_the_package_reference_values() -> None:
    model = st.load_stlpips("cpu")
    with torch.inference_mode():
        values = model(_pattern(4, 64, 0.0), _pattern(4, 64, 0.7))
    assert values.shape == (4,)
    assert torch.allclose(values, torch.tensor(PACKAGE_VALUES_64), rtol=1e-4, atol=1e-7)
    assert "torchvision" not in sys.modules and "stlpips_pytorch" not in sys.modules


def test_identity_symmetry_and_ordering() -> None:
    model = st.load_stlpips("cpu")
    x, y = _pattern(2, 64, 0.0), _pattern(2, 64, 2.0)
    shifted = torch.roll(x, shifts=1, dims=-1)
    with torch.inference_mode():
        assert torch.equal(model(x, x), torch.zeros(2))
        assert torch.allclose(model(x, y), model(y, x), atol=1e-6)
        # A one-pixel shift is what ST-LPIPS is built to tolerate: far closer than a different image.
        assert (model(x, shifted) < 0.25 * model(x, y)).all()


def test_frames_helper_and_size_check() -> None:
    model = st.load_stlpips("cpu")
    assert st.load_stlpips("cpu") is model  # cached per process
    x = _pattern(5, 32, 0.0)
    per_frame = st.stlpips_frames(model, x, _pattern(5, 32, 0.3), batch_size=2)
    assert per_frame.shape == (5,) and (per_frame > 0).all()
    with pytest.raises(ValueError, match="at least"):
        model(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
