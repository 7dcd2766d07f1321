"""Slot–entity correspondence as DCI (Eastwood & Williams 2018) with the FLAM paper's linear position probes.

For every (slot i, entity j) a multinomial logistic-regression probe predicts entity j's grid cell from slot i.
Probes are fitted on one part of the frames and scored on the rest. The importance R[i, j] is the probe's held-out
likelihood gain over chance: with p = mean held-out probability of the true cell and p0 the same for the best
input-free predictor (the fitted cell frequencies), R = max(0, p − p0) / (1 − p0): 0 = no better than chance,
1 = certain and right; values under ProbeConfig.min_importance count as 0. Disentanglement (weighted by each
slot's share of R) and completeness are 1 − normalised entropy of R's rows and columns, as in standard DCI;
informativeness is the held-out accuracy of the probes of the Hungarian matching of slots to entities on R.
"""

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
from torch import Tensor


@dataclass(frozen=True)
class ProbeConfig:
    """Linear-probe fitting: full-batch L-BFGS on standardised slots with a small L2 penalty on the weights."""

    l2: float = 1e-3  # per probe, on the weights (not the biases), added to the mean cross-entropy
    max_iter: int = 200  # L-BFGS iterations (all probes are fitted jointly; their losses are independent)
    # R below this is estimation noise (held-out sets are small) and set to 0: without the floor, random slots'
    # tiny one-off gains would look like a sparse, perfectly "disentangled" R after row/column normalisation.
    min_importance: float = 0.05


@dataclass(frozen=True)
class DCIResult:
    """Scores in [0, 1] plus the matrices behind them (K slots × N entities)."""

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray  # [K,N] R
    matching: list[tuple[int, int]]  # (slot, entity) pairs of the Hungarian matching on R
    accuracy: np.ndarray  # [K,N] held-out accuracy of every probe


def split_frames(num_frames: int, fit_fraction: float, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Bool mask [F], True = fit. Deterministic in seed; with groups [F] (e.g. episode ids) groups stay whole."""
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    ids = np.arange(num_frames) if groups is None else np.asarray(groups)
    if ids.shape != (num_frames,):
        raise ValueError(f"groups must have shape [{num_frames}], got {ids.shape}")
    unique = np.unique(ids)
    if len(unique) < 2:
        raise ValueError("need at least two frames (or groups) to fit probes on one part and score on another")
    order = np.random.default_rng(seed).permutation(len(unique))
    n_fit = min(max(1, round(fit_fraction * len(unique))), len(unique) - 1)
    return np.isin(ids, unique[order[:n_fit]])


def _fit_probes(x: Tensor, y: Tensor, num_cells: int, config: ProbeConfig) -> tuple[Tensor, Tensor]:
    """Weights [K,N,D,C] and biases [K,N,C] of K×N logistic probes; x [F,K,D] standardised, y [F,N] cells."""
    frames, slots, width = x.shape
    entities = y.shape[1]
    weight = torch.zeros(slots, entities, width, num_cells, dtype=x.dtype, requires_grad=True)  # [K,N,D,C]
    bias = torch.zeros(slots, entities, num_cells, dtype=x.dtype, requires_grad=True)  # [K,N,C]
    target = y[:, None, :].expand(frames, slots, entities).reshape(-1)  # [F*K*N]
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=config.max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = torch.einsum("fkd,kndc->fknc", x, weight) + bias  # [F,K,N,C]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, num_cells), target, reduction="sum") / frames
        loss = nll + config.l2 * weight.pow(2).sum()  # sum over probes of (mean CE + l2 |W|²)
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def _normalised_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """Entropy of distributions along `axis` divided by log(size), so 0 = one-hot, 1 = uniform."""
    size = p.shape[axis]
    if size < 2:
        return np.zeros(np.delete(p.shape, axis))
    safe = np.where(p > 0, p, 1.0)
    return np.clip(-(p * np.log(safe)).sum(axis=axis) / np.log(size), 0.0, 1.0)


def dci_from_importance(importance: np.ndarray, accuracy: np.ndarray, min_importance: float = 0.0) -> DCIResult:
    """D, C, I from R [K,N] and probe accuracies [K,N]; an all-zero row/column scores 0 (it explains nothing)."""
    r = np.where(importance >= min_importance, np.clip(importance, 0.0, None), 0.0)  # [K,N]
    row_sum, col_sum, total = r.sum(axis=1), r.sum(axis=0), r.sum()  # [K], [N], scalar
    rows = np.divide(r, row_sum[:, None], out=np.zeros_like(r), where=row_sum[:, None] > 0)  # over entities
    cols = np.divide(r, col_sum[None, :], out=np.zeros_like(r), where=col_sum[None, :] > 0)  # over slots
    d_slot = np.where(row_sum > 0, 1.0 - _normalised_entropy(rows, axis=1), 0.0)  # [K]
    c_entity = np.where(col_sum > 0, 1.0 - _normalised_entropy(cols, axis=0), 0.0)  # [N]
    disentanglement = float((d_slot * row_sum).sum() / total) if total > 0 else 0.0  # weights: slot's share of R
    slot_idx, entity_idx = scipy.optimize.linear_sum_assignment(r, maximize=True)
    matching = sorted((int(i), int(j)) for i, j in zip(slot_idx, entity_idx, strict=True))
    # An entity left unmatched (K < N) counts as accuracy 0.
    informativeness = float(sum(accuracy[i, j] for i, j in matching) / r.shape[1])
    return DCIResult(
        disentanglement=disentanglement,
        completeness=float(c_entity.mean()),
        informativeness=informativeness,
        importance=r,
        matching=matching,
        accuracy=np.asarray(accuracy, dtype=np.float64),
    )


def dci(
    slots: Tensor | np.ndarray,
    cells: Tensor | np.ndarray,
    num_cells: int,
    fit_fraction: float = 0.5,
    seed: int = 0,
    groups: np.ndarray | None = None,
    config: ProbeConfig = ProbeConfig(),
) -> DCIResult:
    """DCI of slots [F,K,D] for entity cells [F,N] (ints in [0, num_cells)); probes fit on fit_fraction of frames.

    The split is random but fixed by seed; pass groups [F] (episode ids) to keep each episode on one side.
    Runs on the CPU in float32.
    """
    x = torch.as_tensor(slots).detach().to("cpu", torch.float32)  # [F,K,D]
    y = torch.as_tensor(cells).detach().to("cpu", torch.long)  # [F,N]
    if x.ndim != 3 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need slots [F,K,D] and cells [F,N] with equal F, got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_cells):
        raise ValueError(f"cells must lie in [0, {num_cells}), got range [{int(y.min())}, {int(y.max())}]")
    fit = torch.from_numpy(split_frames(x.shape[0], fit_fraction, seed, groups))  # [F] bool
    mean, std = x[fit].mean(dim=0), x[fit].std(dim=0, correction=0).clamp(min=1e-6)  # [K,D], from the fit part
    z = (x - mean) / std  # [F,K,D]
    with torch.enable_grad():
        weight, bias = _fit_probes(z[fit], y[fit], num_cells, config)
    with torch.inference_mode():
        held_x, held_y = z[~fit], y[~fit]  # [F',K,D], [F',N]
        probs = torch.softmax(torch.einsum("fkd,kndc->fknc", held_x, weight) + bias, dim=-1)  # [F',K,N,C]
        truth = held_y[:, None, :, None].expand(-1, probs.shape[1], -1, 1)  # [F',K,N,1]
        p_true = probs.gather(-1, truth).squeeze(-1).mean(dim=0)  # [K,N] mean probability of the true cell
        accuracy = (probs.argmax(dim=-1) == held_y[:, None, :]).float().mean(dim=0)  # [K,N]
        # Chance: the fitted cell frequencies (add-one smoothed) used as the prediction for every frame.
        counts = torch.stack([torch.bincount(y[fit][:, j], minlength=num_cells) for j in range(y.shape[1])])  # [N,C]
        freq = (counts + 1.0) / (counts.sum(dim=1, keepdim=True) + num_cells)  # [N,C]
        p_chance = freq.gather(1, held_y.T).mean(dim=1)  # [N]
    headroom = (1.0 - p_chance).clamp(min=1e-6)  # [N]; an entity that never moves has no headroom and R = 0
    importance = ((p_true - p_chance) / headroom).clamp(min=0.0) * (1.0 - p_chance > 1e-6)  # [K,N]
    return dci_from_importance(importance.numpy(), accuracy.numpy(), config.min_importance)


def dci_random_reference(
    shape: tuple[int, int, int],
    cells: Tensor | np.ndarray,
    num_cells: int,
    fit_fraction: float = 0.5,
    seed: int = 0,
    groups: np.ndarray | None = None,
    config: ProbeConfig = ProbeConfig(),
) -> DCIResult:
    """DCI of standard-normal representations of `shape` [F,K,D] for the same cells: the paper's random row."""
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))  # [F,K,D]
    return dci(noise, cells, num_cells, fit_fraction, seed, groups, config)
