"""DCI on representations with known answers: one slot per entity, shuffled slots, entangled slots, noise."""

import numpy as np
import pytest
import scipy.optimize
import torch

from flam.models.metrics.dci import (
    ProbeConfig,
    _fit_probes,
    dci,
    dci_from_importance,
    dci_random_reference,
    split_frames,
)

FRAMES, ENTITIES, CELLS = 300, 3, 9  # a 3×3 probe grid


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    return np.random.default_rng(0).integers(0, CELLS, size=(FRAMES, ENTITIES))  # [F,N]


def _one_hot_slots(cells: np.ndarray) -> np.ndarray:
    """Slot j is the one-hot code of entity j's cell: [F,N,C]."""
    return np.eye(CELLS)[cells]


def test_one_slot_per_entity_scores_one(cells: np.ndarray) -> None:
    result = dci(_one_hot_slots(cells), cells, CELLS)
    assert result.disentanglement > 0.95 and result.completeness > 0.95 and result.informativeness > 0.99
    assert result.matching == [(0, 0), (1, 1), (2, 2)]
    assert result.importance.shape == (ENTITIES, ENTITIES) and result.accuracy.shape == (ENTITIES, ENTITIES)
    off_diagonal = result.accuracy[~np.eye(ENTITIES, dtype=bool)]
    assert off_diagonal.max() < 0.4  # a slot says nothing about the other entities' cells
    # The held-out predictions behind the accuracies: slot j names entity j's cell on every scored frame.
    assert result.scored.shape == (FRAMES,) and 0 < result.scored.sum() < FRAMES
    assert result.predicted.shape == (result.scored.sum(), ENTITIES, ENTITIES)
    np.testing.assert_array_equal(result.predicted[:, range(ENTITIES), range(ENTITIES)], cells[result.scored])


def test_shuffled_slots_give_the_same_scores_and_a_permuted_matching(cells: np.ndarray) -> None:
    order = [2, 0, 1]  # new slot k holds old slot order[k], i.e. entity order[k]
    base = dci(_one_hot_slots(cells), cells, CELLS)
    shuffled = dci(_one_hot_slots(cells)[:, order], cells, CELLS)
    assert shuffled.matching == [(k, order[k]) for k in range(ENTITIES)]
    assert np.isclose(shuffled.disentanglement, base.disentanglement, atol=1e-6)
    assert np.isclose(shuffled.completeness, base.completeness, atol=1e-6)
    assert np.isclose(shuffled.informativeness, base.informativeness, atol=1e-6)
    assert np.allclose(shuffled.importance, base.importance[order], atol=1e-4)


def test_extra_slots_stay_unmatched_and_do_not_hurt(cells: np.ndarray) -> None:
    noise = np.random.default_rng(1).normal(size=(FRAMES, 2, CELLS))
    result = dci(np.concatenate([_one_hot_slots(cells), noise], axis=1), cells, CELLS)
    assert result.importance.shape == (ENTITIES + 2, ENTITIES)
    assert result.matching == [(0, 0), (1, 1), (2, 2)]
    assert result.disentanglement > 0.95 and result.completeness > 0.95


def test_every_slot_encoding_every_entity_is_not_disentangled(cells: np.ndarray) -> None:
    everything = _one_hot_slots(cells).reshape(FRAMES, 1, ENTITIES * CELLS).repeat(ENTITIES, axis=1)  # [F,N,N*C]
    result = dci(everything, cells, CELLS)
    assert result.disentanglement < 0.1 and result.completeness < 0.1
    assert result.informativeness > 0.9  # every slot still knows every position


def test_random_representations_score_near_chance(cells: np.ndarray) -> None:
    result = dci_random_reference((FRAMES, ENTITIES, 16), cells, CELLS, seed=3)
    assert result.informativeness < 2.5 / CELLS
    assert result.disentanglement < 0.3 and result.completeness < 0.3


def test_penalty_is_picked_per_probe_on_the_fit_part(cells: np.ndarray) -> None:
    # A sharp code of the cell is best fitted with the weakest penalty: a strong one flattens its predictions.
    noise = np.random.default_rng(2).normal(size=(FRAMES, 1, CELLS))
    config = ProbeConfig(l2_grid=(1e-1, 1e-5))
    result = dci(np.concatenate([_one_hot_slots(cells), noise], axis=1), cells, CELLS, config=config)
    assert result.l2 is not None and result.l2.shape == (ENTITIES + 1, ENTITIES)
    assert set(np.unique(result.l2)) <= {np.float32(1e-1), np.float32(1e-5)}
    assert np.all(np.diag(result.l2[:ENTITIES]) == np.float32(1e-5))
    assert np.all(result.importance[ENTITIES] == 0.0)  # noise stays worthless whichever penalty it drew
    fixed = dci(_one_hot_slots(cells), cells, CELLS, config=ProbeConfig(l2_grid=(1e-3,)))
    assert fixed.l2 is not None and np.all(fixed.l2 == 1e-3)


def _objective_alone(x: np.ndarray, y: np.ndarray, l2: float, flat: np.ndarray) -> tuple[float, np.ndarray]:
    """One probe's mean cross-entropy + l2·|W|² and its gradient, in float64, for scipy."""
    width, cells = x.shape[1], flat.size // (x.shape[1] + 1)
    weight, bias = flat[: width * cells].reshape(width, cells), flat[width * cells :]
    logits = x @ weight + bias
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(len(y)), y]).mean() + l2 * (weight**2).sum()
    probs[np.arange(len(y)), y] -= 1.0
    grad_weight = x.T @ probs / len(y) + 2.0 * l2 * weight
    return loss, np.concatenate([grad_weight.ravel(), probs.mean(axis=0)])


def test_each_probe_reaches_the_optimum_it_has_when_fitted_alone() -> None:
    # Probes of very different curvature (a sharp code with a weak penalty next to noise with a strong one), fitted
    # in one batch, each end where scipy's float64 L-BFGS puts the same probe fitted by itself.
    rng = np.random.default_rng(1)
    frames, slots, entities, width = 240, 3, 2, 5
    x = rng.normal(size=(frames, slots, width))
    y = np.stack([np.argmax(x[:, 0, :4] * 10.0 + rng.normal(size=(frames, 4)), axis=1), rng.integers(0, 4, frames)], 1)
    l2 = np.array([[1e-5, 1e-1], [1e-2, 1e-3], [1e-1, 1e-5]])
    weight, bias = _fit_probes(
        torch.tensor(x, dtype=torch.float32), torch.tensor(y), 4, torch.tensor(l2, dtype=torch.float32), ProbeConfig()
    )
    for k in range(slots):
        for n in range(entities):
            alone = scipy.optimize.minimize(
                lambda flat, k=k, n=n: _objective_alone(x[:, k], y[:, n], l2[k, n], flat),
                np.zeros(width * 4 + 4),
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-14},
            )
            batched = np.concatenate([weight[k, n].double().numpy().ravel(), bias[k, n].double().numpy()])
            loss, _ = _objective_alone(x[:, k], y[:, n], l2[k, n], batched)
            assert loss == pytest.approx(alone.fun, abs=1e-5), (k, n)


def test_split_is_deterministic_and_keeps_groups_whole() -> None:
    groups = np.repeat(np.arange(10), 5)  # 10 episodes × 5 frames
    first, again = split_frames(50, 0.6, seed=7, groups=groups), split_frames(50, 0.6, seed=7, groups=groups)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, split_frames(50, 0.6, seed=8, groups=groups))
    assert first.sum() == 30
    for episode in range(10):
        assert len(set(first[groups == episode])) == 1
    with pytest.raises(ValueError, match="fit_fraction"):
        split_frames(50, 1.0, seed=0)


def test_scores_from_a_hand_made_importance_matrix() -> None:
    # Slot 0 splits its importance evenly over both entities; slot 1 owns entity 1; slot 2 is empty.
    importance = np.array([[0.5, 0.5], [0.0, 1.0], [0.0, 0.0]])
    accuracy = np.array([[0.6, 0.5], [0.1, 0.9], [0.1, 0.1]])
    result = dci_from_importance(importance, accuracy)
    assert np.isclose(result.disentanglement, (1.0 * 0.0 + 1.0 * 1.0) / 2.0)  # weights: each row's share of R
    entropy_col1 = -(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3)) / np.log(3)
    assert np.isclose(result.completeness, (1.0 + (1.0 - entropy_col1)) / 2.0)
    assert result.matching == [(0, 0), (1, 1)]
    assert np.isclose(result.informativeness, (0.6 + 0.9) / 2.0)


def test_bad_inputs_raise(cells: np.ndarray) -> None:
    with pytest.raises(ValueError, match="cells must lie"):
        dci(_one_hot_slots(cells), cells + CELLS, CELLS)
    with pytest.raises(ValueError, match="equal F"):
        dci(_one_hot_slots(cells)[:10], cells, CELLS, config=ProbeConfig(max_iter=5))
    with pytest.raises(ValueError, match="fit groups"):
        dci(_one_hot_slots(cells), cells, CELLS, groups=np.repeat([0, 1], FRAMES // 2))
    with pytest.raises(ValueError, match="l2_grid"):
        dci(_one_hot_slots(cells), cells, CELLS, config=ProbeConfig(l2_grid=()))
