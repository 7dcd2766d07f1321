"""Per-model action statistics from the bundled episodes: what the UI needs to order and label its sliders.

For every slot: the mean and spread of its inferred actions and their principal directions (the slider axes,
most variance first). Where the episodes carry ground truth: which entity each slot owns (the slot holding most
of the entity's pixels under its attention mask), and the mean latent action of a slot per true action name of
the entity it owns ("forward", "turn left", ...), usable as a `set` edit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from flam.models.lam import Inference
from flam.worlds.dataset import Dataset


def entity_cover(entity_map: np.ndarray, n_entities: int, grid: int) -> np.ndarray:
    """entity_map uint8 [T, H, W] (0 none, i+1 entity i) -> fraction of each token cell per entity [T, N, h, w]."""
    t, height, width = entity_map.shape
    one_hot = entity_map[:, None] == np.arange(1, n_entities + 1)[None, :, None, None]  # [T, N, H, W]
    cells = one_hot.reshape(t, n_entities, grid, height // grid, grid, width // grid)  # [T, N, h, ph, w, pw]
    return cells.mean(axis=(3, 5))  # [T, N, h, w]


def slot_owners(masks: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """masks [T, K, h, w], cover [T, N, h, w] -> owner slot of each entity [T, N] (-1 where it is not visible)."""
    mass = np.einsum("tkhw,tnhw->tnk", masks, cover)  # [T, N, K] attention mass of slot k on entity n
    owners = mass.argmax(axis=2)  # [T, N]
    owners[cover.sum(axis=(2, 3)) == 0] = -1
    return owners


def principal_directions(actions: np.ndarray) -> dict[str, Any]:
    """actions [M, A] -> mean, std, principal directions (rows, most variance first) and their spreads."""
    mean = actions.mean(axis=0)  # [A]
    centred = actions - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)  # vt [A, A]
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])  # largest component positive
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    variance = singular**2 / max(1, actions.shape[0] - 1)
    total = float(variance.sum()) or 1.0
    return {
        "mean": mean,
        "std": actions.std(axis=0),
        "directions": vt,
        "direction_std": np.sqrt(variance),
        "explained_variance_ratio": variance / total,
    }


def _round(value: Any, decimals: int) -> Any:
    if isinstance(value, np.ndarray):
        return np.round(value.astype(np.float64), decimals).tolist()
    if isinstance(value, dict):
        return {k: _round(v, decimals) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, decimals) for v in value]
    if isinstance(value, float):
        return round(value, decimals)
    return value


def action_statistics(
    n_slots: int, action_dim: int, dataset: Dataset, analyse: Callable[[int], Inference], decimals: int = 5
) -> dict[str, Any]:
    """Statistics of a model's inferred actions over every episode of `dataset` (see the module docstring).

    `analyse(i)` reads episode i (batch 1); the caller passes the same analysis it serves, so numbers agree.
    """
    names = dataset.action_names if dataset.has_ground_truth else None
    n_entities = dataset.n_entities if dataset.has_ground_truth else 0
    all_actions, by_name, share = [], {}, np.zeros((n_slots, max(1, n_entities)))
    frames_seen = 0
    for episode in range(dataset.n_episodes):
        inference = analyse(episode)
        actions = inference.actions[0].float().cpu().numpy()  # [T-1, K, A]
        masks = inference.masks[0].float().cpu().numpy()  # [T, K, h, w]
        all_actions.append(actions)
        if names is None:
            continue
        truth = dataset.ground_truth(episode)
        cover = entity_cover(truth.entity_map, n_entities, masks.shape[-1])  # [T, N, h, w]
        owners = slot_owners(masks, cover)  # [T, N]
        for n in range(n_entities):
            visible = owners[:, n] >= 0
            np.add.at(share, (owners[visible, n], n), 1.0)
        frames_seen += owners.shape[0]
        _collect_by_name(actions, owners[:-1], truth.actions, names, by_name)
    stacked = np.concatenate(all_actions)  # [M, K, A]
    slots = []
    for k in range(n_slots):
        entry: dict[str, Any] = {"slot": k, **principal_directions(stacked[:, k].astype(np.float64))}
        if names is not None:
            entry["entity_share"] = (share[k] / max(1, frames_seen)).tolist()
            entry["by_action_name"] = {
                name: {"mean": np.mean(vectors, axis=0), "count": len(vectors)}
                for name, vectors in sorted(by_name.get(k, {}).items())
            }
        slots.append(entry)
    summary = {
        "episodes": dataset.n_episodes,
        "transitions": int(stacked.shape[0]),
        "action_dim": action_dim,
        "action_names": names,
        "entities": n_entities,
        "slots": slots,
    }
    return _round(summary, decimals)


def _collect_by_name(
    actions: np.ndarray,
    owners: np.ndarray,
    true_actions: np.ndarray,
    names: list[str],
    out: dict[int, dict[str, list[np.ndarray]]],
) -> None:
    """Add slot k's latent action at transition t under the true action name of the entity it owns at t.

    actions [T-1, K, A]; owners [T-1, N]; true_actions [T-1, N] (-1 for entities without actions). A slot that
    owns several entities doing different things at t is ambiguous there and is skipped.
    """
    for t in range(actions.shape[0]):
        per_slot: dict[int, set[int]] = {}
        for n, k in enumerate(owners[t]):
            code = int(true_actions[t, n])
            if k >= 0 and 0 <= code < len(names):
                per_slot.setdefault(int(k), set()).add(code)
        for k, codes in per_slot.items():
            if len(codes) == 1:
                out.setdefault(k, {}).setdefault(names[codes.pop()], []).append(actions[t, k])
