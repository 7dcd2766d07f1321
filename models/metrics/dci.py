"""Slot–entity correspondence as DCI (Eastwood & Williams 2018) with the FLAM paper's linear position probes.

For every (slot i, entity j) a multinomial logistic-regression probe predicts entity j's grid cell from slot i.
Probes are fitted on one part of the frames and scored on the rest. The importance R[i, j] is the probe's held-out
likelihood gain over chance: with p = mean held-out probability of the true cell and p0 the same for the best
input-free predictor (the fitted cell frequencies), R = max(0, p − p0) / (1 − p0): 0 = no better than chance,
1 = certain and right; values under ProbeConfig.min_importance count as 0. Disentanglement (weighted by each
slot's share of R) and completeness are 1 − normalised entropy of R's rows and columns, as in standard DCI;
informativeness is the held-out accuracy of the probes of the Hungarian matching of slots to entities on R.

Each probe's L2 penalty is picked from a grid by the same score p on an inner split of the fit part (the scored
part is never looked at): how strongly to regularise depends on how sharply a representation encodes position,
and one fixed penalty under-rates sharp codes (on validation episodes of the shipped 4-agent anchored FLAM, a fixed
1e-3 puts informativeness at 0.83 and the picked penalties at 0.93: scripts/dci_penalties.py).
"""

from dataclasses import dataclass, replace

import numpy as np
import scipy.optimize
import torch
from torch import Tensor


@dataclass(frozen=True)
class ProbeConfig:
    """Linear-probe fitting: full-batch L-BFGS on standardised slots with an L2 penalty on the weights."""

    # Candidate penalties per probe, on the weights (not the biases), added to the mean cross-entropy. Fitted
    # strongest first, each warm-started from the last (a regularisation path); one value = no selection.
    l2_grid: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    select_fraction: float = 0.7  # share of the fit part's frames (or groups) the candidates are fitted on
    max_iter: int = 1000  # L-BFGS iterations per fit at most; each probe stops on its own (below)
    tolerance: float = 1e-5  # a probe has converged when no component of its objective's gradient exceeds this
    history: int = 20  # L-BFGS curvature pairs kept per probe
    # R below this is estimation noise (held-out sets are small) and set to 0: without the floor, random slots'
    # tiny one-off gains would look like a sparse, perfectly "disentangled" R after row/column normalisation.
    min_importance: float = 0.05


DCI_SCORES = ("disentanglement", "completeness", "informativeness")  # DCIResult's scores, in the usual order


@dataclass(frozen=True)
class DCIResult:
    """Scores in [0, 1] plus the matrices behind them (K slots × N entities)."""

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray  # [K,N] R
    matching: list[tuple[int, int]]  # (slot, entity) pairs of the Hungarian matching on R
    accuracy: np.ndarray  # [K,N] held-out accuracy of every probe
    l2: np.ndarray | None = None  # [K,N] the penalty each probe was fitted with (None: scores from a given R)
    scored: np.ndarray | None = None  # [F] bool: the frames the probes were scored on (None: scores from a given R)
    predicted: np.ndarray | None = None  # [F',K,N] each probe's predicted cell on those frames


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


def _fit_probes(
    x: Tensor,
    y: Tensor,
    num_cells: int,
    l2: Tensor,
    config: ProbeConfig,
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Weights [K,N,D,C] and biases [K,N,C] of K×N logistic probes; x [F,K,D] standardised, y [F,N] cells,
    l2 [K,N] each probe's penalty; init: weights and biases to start from (zeros by default).

    Each probe minimises its mean cross-entropy plus l2·|W|² by L-BFGS of its own: the K×N problems are batched
    into one tensor, but each keeps its own curvature history and step length (backtracking to the Armijo
    condition) and stops on its own when converged, so later passes only compute the probes still moving. One
    L-BFGS over the summed losses (this module's solver until 2026-12) shares its history and step between problems
    of very different curvature: on validation episodes of the shipped 8-agent FLAM its informativeness was 0.78
    after 200 iterations and 0.84 after 3,000, where these separate fits reach 0.86 and stay there from 1,000
    iterations to 2,000 (scripts/dci_probe_fits.py).
    """
    slots, entities, width = x.shape[1], y.shape[1], x.shape[2]
    problems, split = slots * entities, width * num_cells
    slot_of = torch.arange(slots).repeat_interleave(entities)  # [P]: problem p = (slot p // N, entity p % N)
    entity_of = torch.arange(entities).repeat(slots)  # [P]
    inputs, targets, penalty = x[:, slot_of], y[:, entity_of], l2.reshape(problems)  # [F,P,D], [F,P], [P]
    if init is None:
        theta = x.new_zeros(problems, split + num_cells)  # [P, n]: each probe's weights, then its biases
    else:
        theta = torch.cat([init[0].reshape(problems, split), init[1].reshape(problems, num_cells)], dim=1)

    def evaluate(point: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Objectives [P'] and their gradients [P', n] of the problems `rows` [P'] at their parameters point."""
        point = point.detach().requires_grad_(True)
        weight, bias = point[:, :split].view(-1, width, num_cells), point[:, split:]  # [P',D,C], [P',C]
        read = inputs if len(rows) == problems else inputs[:, rows]  # [F,P',D]
        logits = torch.einsum("fpd,pdc->fpc", read, weight) + bias  # [F,P',C]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, num_cells), targets[:, rows].reshape(-1), reduction="none"
        ).view(logits.shape[:2])  # [F,P']
        losses = nll.mean(dim=0) + penalty[rows] * weight.pow(2).sum(dim=(1, 2))  # [P']
        (grad,) = torch.autograd.grad(losses.sum(), point)
        return losses.detach(), grad

    everything = torch.arange(problems)
    loss, grad = evaluate(theta, everything)  # [P], [P, n]
    active = grad.abs().amax(dim=1) > config.tolerance  # [P]: problems still being fitted
    # A problem's step scale until it has a curvature pair, as torch's L-BFGS first step: -grad, cut to |·|₁ <= 1.
    gamma = 1.0 / grad.abs().sum(dim=1).clamp(min=1.0)  # [P]
    steps: list[Tensor] = []  # s: the last config.history parameter changes [P, n], oldest first
    changes: list[Tensor] = []  # y: the matching gradient changes [P, n]
    inverse: list[Tensor] = []  # rho = 1 / (s·y) [P]; 0 (with s = y = 0) where a pair had no positive curvature
    for _ in range(config.max_iter):
        rows = active.nonzero().squeeze(1)  # [P']
        if rows.numel() == 0:
            break
        # Two-loop recursion: direction = -H·grad, H the L-BFGS estimate of each problem's inverse Hessian (run
        # on every problem: cheaper than gathering the active ones' histories).
        q, alphas = grad.clone(), []
        for s, change, rho in zip(reversed(steps), reversed(changes), reversed(inverse), strict=True):
            alpha = rho * (s * q).sum(dim=1)
            q -= alpha[:, None] * change
            alphas.append(alpha)
        r = gamma[:, None] * q
        for s, change, rho, alpha in zip(steps, changes, inverse, reversed(alphas), strict=True):
            r += s * (alpha - rho * (change * r).sum(dim=1))[:, None]
        g, direction = grad[rows], -r[rows]
        uphill = (g * direction).sum(dim=1) >= 0  # a stale curvature estimate: fall back to steepest descent
        direction[uphill] = -gamma[rows[uphill], None] * g[uphill]
        slope = (g * direction).sum(dim=1)  # [P'] < 0
        # Backtracking per problem: a problem's step halves until its objective falls by the Armijo amount; only
        # the problems still searching are evaluated again.
        length = torch.ones_like(slope)
        new_loss, new_grad = torch.empty_like(slope), torch.empty_like(g)
        accepted = torch.zeros_like(slope, dtype=torch.bool)
        for _ in range(30):
            pending = (~accepted).nonzero().squeeze(1)
            if pending.numel() == 0:
                break
            trial = theta[rows[pending]] + length[pending, None] * direction[pending]
            new_loss[pending], new_grad[pending] = evaluate(trial, rows[pending])
            accepted[pending] = new_loss[pending] <= loss[rows[pending]] + 1e-4 * length[pending] * slope[pending]
            length[pending] = torch.where(accepted[pending], length[pending], 0.5 * length[pending])
        # A problem whose step found no decrease is as good as float32 gets it: it stops where it is.
        step = torch.where(accepted[:, None], length[:, None] * direction, 0.0)  # [P', n]
        change = torch.where(accepted[:, None], new_grad - g, 0.0)
        decrease = torch.where(accepted, loss[rows] - new_loss, 0.0)
        theta[rows] += step
        loss[rows] = torch.where(accepted, new_loss, loss[rows])
        grad[rows] = torch.where(accepted[:, None], new_grad, g)
        curvature = (step * change).sum(dim=1)
        useful = curvature > 1e-10
        for history, value in ((steps, step), (changes, change)):
            full = torch.zeros_like(theta)
            full[rows] = torch.where(useful[:, None], value, 0.0)
            history.append(full)
        rho = torch.zeros_like(loss)
        rho[rows] = torch.where(useful, 1.0 / curvature.clamp(min=1e-10), 0.0)
        inverse.append(rho)
        gamma[rows] = torch.where(useful, curvature / change.pow(2).sum(dim=1).clamp(min=1e-20), gamma[rows])
        if len(steps) > config.history:
            del steps[0], changes[0], inverse[0]
        active[rows] = accepted & (decrease > 0) & (grad[rows].abs().amax(dim=1) > config.tolerance)
    weight, bias = theta[:, :split], theta[:, split:]
    return weight.reshape(slots, entities, width, num_cells), bias.reshape(slots, entities, num_cells)


def _probe_scores(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Over frames x [F,K,D], y [F,N]: the mean probability each probe gives the true cell [K,N], and each probe's
    predicted cell on every frame [F,K,N]."""
    probs = torch.softmax(torch.einsum("fkd,kndc->fknc", x, weight) + bias, dim=-1)  # [F,K,N,C]
    truth = y[:, None, :, None].expand(-1, probs.shape[1], -1, 1)  # [F,K,N,1]
    p_true = probs.gather(-1, truth).squeeze(-1).mean(dim=0)  # [K,N]
    return p_true, probs.argmax(dim=-1)


def _select_l2(
    x: Tensor, y: Tensor, num_cells: int, groups: np.ndarray | None, seed: int, config: ProbeConfig
) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """Each probe's penalty [K,N]: the candidate whose fit on part of (x, y) gives the rest's true cells the most
    probability (the score R is built from; log-likelihood would punish a sharp probe's rare confident misses).
    Also each probe's weights and biases at its picked penalty (None when the grid has one value): the final fit
    on all of (x, y) starts from them."""
    shape = (x.shape[1], y.shape[1])
    grid = sorted(config.l2_grid, reverse=True)
    if len(grid) == 1:
        return x.new_full(shape, grid[0]), None
    if len(np.unique(np.arange(x.shape[0]) if groups is None else groups)) < 2:
        raise ValueError("picking probe penalties needs two or more fit groups (episodes): give more data")
    inner = torch.from_numpy(split_frames(x.shape[0], config.select_fraction, seed + 1, groups))  # [F] bool
    best, best_score = x.new_full(shape, grid[0]), x.new_full(shape, -torch.inf)
    start = picked = None
    for l2 in grid:
        start = _fit_probes(x[inner], y[inner], num_cells, x.new_full(shape, l2), config, start)  # warm: a path
        with torch.inference_mode():
            score, _ = _probe_scores(x[~inner], y[~inner], *start)  # [K,N]
        better = score > best_score
        best, best_score = torch.where(better, l2, best), torch.where(better, score, best_score)
        if picked is None:
            picked = start
        else:
            weight, bias = (torch.where(better.view(*shape, *[1] * (new.ndim - 2)), new, old)
                            for new, old in zip(start, picked, strict=True))  # fmt: skip
            picked = weight, bias
    return best, picked


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
    if not config.l2_grid or min(config.l2_grid) < 0:
        raise ValueError(f"l2_grid must hold one or more penalties >= 0, got {config.l2_grid}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_cells):
        raise ValueError(f"cells must lie in [0, {num_cells}), got range [{int(y.min())}, {int(y.max())}]")
    fit_np = split_frames(x.shape[0], fit_fraction, seed, groups)  # [F] bool
    fit = torch.from_numpy(fit_np)
    mean, std = x[fit].mean(dim=0), x[fit].std(dim=0, correction=0).clamp(min=1e-6)  # [K,D], from the fit part
    z = (x - mean) / std  # [F,K,D]
    with torch.enable_grad():
        fit_groups = None if groups is None else np.asarray(groups)[fit_np]
        l2, picked = _select_l2(z[fit], y[fit], num_cells, fit_groups, seed, config)  # [K,N]
        weight, bias = _fit_probes(z[fit], y[fit], num_cells, l2, config, picked)
    with torch.inference_mode():
        held_y = y[~fit]  # [F',N]
        p_true, predicted = _probe_scores(z[~fit], held_y, weight, bias)  # [K,N], [F',K,N] on the scored part
        accuracy = (predicted == held_y[:, None, :]).float().mean(dim=0)  # [K,N]
        # Chance: the fitted cell frequencies (add-one smoothed) used as the prediction for every frame.
        counts = torch.stack([torch.bincount(y[fit][:, j], minlength=num_cells) for j in range(y.shape[1])])  # [N,C]
        freq = (counts + 1.0) / (counts.sum(dim=1, keepdim=True) + num_cells)  # [N,C]
        p_chance = freq.gather(1, held_y.T).mean(dim=1)  # [N]
    headroom = (1.0 - p_chance).clamp(min=1e-6)  # [N]; an entity that never moves has no headroom and R = 0
    importance = ((p_true - p_chance) / headroom).clamp(min=0.0) * (1.0 - p_chance > 1e-6)  # [K,N]
    result = dci_from_importance(importance.numpy(), accuracy.numpy(), config.min_importance)
    return replace(result, l2=l2.numpy(), scored=~fit_np, predicted=predicted.numpy())


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
