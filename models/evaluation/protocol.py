"""The evaluation protocol of `flam eval`: infer actions from held-out video, roll out, and score what came out.

As in the paper: the factorizer and IDM read the ground-truth episode and give posterior-mean actions; the model
then rolls out autoregressively on its own predictions from the first `context` frames for `horizon` steps, and
the predicted frames are compared with the true frames context .. context + horizon - 1. The factorizer is
causal, so reading the whole episode gives the same actions for the window as reading the window alone (tested);
the whole episode's slots feed the correspondence probes. Where ground truth exists (built-in worlds), FLAM is
also scored on slot–entity correspondence (DCI) and on edits: each slot in turn gets prior samples as actions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
import torch

from flam.models.actions import prior_actions
from flam.models.lam import LAMState, action_slot_indices, count_action_slots
from flam.models.metrics.dci import (
    DCI_SCORES,
    DCIResult,
    ProbeConfig,
    dci,
    dci_from_importance,
    dci_random_reference,
)
from flam.models.metrics.fvd import frechet_video_distance
from flam.models.metrics.i3d import MIN_FRAMES
from flam.models.metrics.locality import edit_effect, edit_locality
from flam.models.metrics.stlpips import load_stlpips, stlpips_frames
from flam.models.metrics.video import as_float_frames, psnr, ssim
from flam.models.rollout import rollout
from flam.models.train import token_masks
from flam.models.world_model import WorldModel
from flam.worlds.dataset import Dataset

FORMAT = "flam-eval"
VERSION = 1
Log = Callable[[str], None]

# What each number is, in the words reports and the UI show next to it.
METRIC_NAMES = {
    "psnr": "PSNR (dB, frames in [0, 1], capped at 100 dB)",
    "ssim": "SSIM (Gaussian window 11, sigma 1.5)",
    "st_lpips": "ST-LPIPS (shift-tolerant LPIPS, AlexNet variant; not LPIPS)",
    "fvd": "FVD (I3D Kinetics-400, {horizon}-frame clips at {size} px upsampled to 224 px)",
    "tokenizer_psnr": "tokenizer PSNR: decode(encode(frame)) against the frame, every frame of the episodes",
    "copy_psnr": "reference: PSNR of repeating the last context frame for the whole horizon (no model)",
    "dci": (
        "DCI: linear position probes (grid cells) from each slot to each entity, fitted on half of the episodes "
        "(each probe's L2 penalty picked on part of that half) and scored on the other half"
    ),
    "edit_locality": "share of an edit's pixel change outside the other entities' ground-truth masks (1 = local)",
    "edit_effect": "share of edits that visibly change the target entity (mean change > 8/255 near it)",
}
BINDING_RULE = (
    "each entity is matched to one slot (Hungarian) by the share of the slot masks' mass on the entity's "
    "ground-truth tokens, read off the ground-truth frames: the slot a person gets by clicking the entity"
)


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how much of it; every number that changes results is here."""

    horizon: int = 10  # rollout steps H
    context: int = 1  # context frames C the rollout starts from
    split: str = "test"
    episodes: int | None = None  # the first this many episodes of the split; None = all of it
    seed: int = 0  # prior samples of the edits and the DCI fit/score split
    batch_size: int = 16  # episodes per forward pass (edits: times K rollouts)
    fvd_episodes: int = 32  # FVD on the first this many evaluated episodes (I3D is slow on a CPU); 0 = skip
    edit_episodes: int = 32  # edits on the first this many evaluated episodes; 0 = skip
    dci_fit_fraction: float = 0.5  # share of episodes the probes are fitted on; scored on the rest
    probe_iterations: int = ProbeConfig.max_iter  # at most this many L-BFGS iterations per DCI probe fit
    examples: int = 3  # episodes kept (frames, masks) for report figures

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        for name in ("horizon", "context", "batch_size", "probe_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected at least 1, got {getattr(self, name)}")
        for name in ("fvd_episodes", "edit_episodes", "examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected 0 or more, got {getattr(self, name)}")
        if self.episodes is not None and self.episodes < 1:
            raise ValueError(f"episodes: expected at least 1, got {self.episodes}")


@dataclass
class EditExample:
    """One episode's edits, for the report's before/after figure."""

    episode: int
    base: np.ndarray  # uint8 [H, Hpx, Wpx, 3] the rollout with inferred actions
    edited: np.ndarray  # uint8 [K, H, Hpx, Wpx, 3] slot k's actions replaced by prior samples
    targets: list[int | None]  # the entity each slot is matched to (None: a background slot)


@dataclass
class Examples:
    """Frames and masks of a few episodes for figures (not part of the JSON)."""

    episodes: list[int]
    truth: np.ndarray  # uint8 [X, C+H, Hpx, Wpx, 3] the ground-truth window
    predicted: np.ndarray  # uint8 [X, H, Hpx, Wpx, 3]
    masks: np.ndarray  # float32 [X, C+H, K, h, w] slot masks read off the ground-truth frames
    edit: EditExample | None
    entity_colors: list[list[int]]


@dataclass
class Evaluation:
    summary: dict[str, Any]  # the JSON contract (eval.json)
    examples: Examples
    psnr_frames: np.ndarray  # [V, H] PSNR of every episode and step, for paired comparisons


@dataclass
class _Collected:
    """Everything the batched pass gathers before the metrics that need all episodes."""

    truth: list[torch.Tensor] = field(default_factory=list)  # uint8 [B, H, ...] true frames of the rollout window
    predicted: list[torch.Tensor] = field(default_factory=list)  # uint8 [B, H, ...]
    tokenizer_psnr: list[torch.Tensor] = field(default_factory=list)  # [B*T] per frame
    last_context: list[torch.Tensor] = field(default_factory=list)  # uint8 [B, Hpx, Wpx, 3]
    slots: list[torch.Tensor] = field(default_factory=list)  # [B, T, K, D]
    masks: list[torch.Tensor] = field(default_factory=list)  # [B, T, K, h, w]
    rates: list[torch.Tensor] = field(default_factory=list)  # [B, T-1, K] KL(posterior || prior) of each action
    example_truth: list[torch.Tensor] = field(default_factory=list)  # uint8 [b, C+H, ...]
    edits_base: list[np.ndarray] = field(default_factory=list)  # uint8 [B', H, ...]
    edits: list[np.ndarray] = field(default_factory=list)  # uint8 [B', K, H, ...]


def not_applicable(reason: str) -> dict[str, Any]:
    """The JSON value of a metric that does not apply to this model or data."""
    return {"applicable": False, "reason": reason}


def select_episodes(dataset: Dataset, config: EvalConfig) -> list[int]:
    """The evaluated episodes: the first `episodes` of the split (all of it by default)."""
    ids = dataset.split(config.split)
    if not ids:
        raise ValueError(f"{dataset.path}: the {config.split!r} split has no episodes")
    return ids[: config.episodes] if config.episodes else ids


def evaluate(
    model: WorldModel,
    dataset: Dataset,
    config: EvalConfig = EvalConfig(),
    checkpoint: Path | None = None,
    log: Log = lambda message: None,
) -> Evaluation:
    """Run the protocol on `dataset`'s split and return the JSON summary plus figure material."""
    config.check()
    started = time.perf_counter()
    window = config.context + config.horizon
    if dataset.frames_per_episode < window:
        raise ValueError(
            f"{dataset.path}: episodes have {dataset.frames_per_episode} frames; context {config.context} + "
            f"horizon {config.horizon} needs {window}"
        )
    if dataset.image_size != model.image_size:
        raise ValueError(f"{dataset.path}: {dataset.image_size}px frames, the model takes {model.image_size}px")
    episodes = select_episodes(dataset, config)
    factored = model.header.get("kind") == "flam"
    truth_reason = _truth_reason(dataset)
    do_edits = factored and truth_reason is None and config.edit_episodes > 0
    collected = _collect(model, dataset, episodes, config, do_edits, log)

    truth = torch.cat(collected.truth)  # uint8 [V, H, ...]
    predicted = torch.cat(collected.predicted)  # uint8 [V, H, ...]
    log(f"scoring {len(episodes)} episodes")
    frame_scores = _frame_scores(predicted, truth, model.device)
    masks = torch.cat(collected.masks)  # [V, T, K, h, w]
    rates = torch.cat(collected.rates).flatten(0, 1).mean(dim=0)  # [K] mean over episodes and transitions
    summary: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint": _identity(model, checkpoint),
        "data": _data_record(dataset, config),
        "protocol": {
            **asdict(config),
            "actions": "posterior means inferred from the ground-truth episode, then an autoregressive rollout",
        },
        "n_episodes": len(episodes),
        **{name: float(values.mean()) for name, values in frame_scores.items()},
        "fvd": None,
        **{f"{name}_per_step": values.mean(dim=0).tolist() for name, values in frame_scores.items()},
        "tokenizer_psnr": float(torch.cat(collected.tokenizer_psnr).mean()),
        "copy_psnr": _copy_psnr(truth, torch.cat(collected.last_context)),
        # Which slots carry action information: a slot whose rate is ~0 moves nothing whatever its mask covers.
        "slot_rates": rates.tolist(),  # nats per transition
        "action_slots": count_action_slots(rates),
    }
    summary.update(_fvd(truth, predicted, config, model.device, log))
    binding = None
    if truth_reason is not None:
        for key in ("dci", "edit_locality", "edit_effect"):
            summary[key] = not_applicable(truth_reason)
    elif not factored:
        reason = "the monolithic baseline has one action and no slots for the whole frame: nothing to match"
        for key in ("dci", "edit_locality", "edit_effect"):
            summary[key] = not_applicable(reason)
    else:
        binding = slot_binding(masks, dataset, episodes)
        summary["binding"] = binding
        summary["dci"] = slot_dci(torch.cat(collected.slots), dataset, episodes, config, log, rates)
        if do_edits:
            base = np.concatenate(collected.edits_base)  # uint8 [V', H, ...]
            edited = np.concatenate(collected.edits)  # uint8 [V', K, H, ...]
            summary.update(edit_scores(base, edited, dataset, episodes, binding["slot_entity"], config))
        else:
            summary["edit_locality"] = summary["edit_effect"] = not_applicable("edits were skipped (--edit-episodes 0)")
    summary["metrics"] = {
        **METRIC_NAMES,
        "fvd": METRIC_NAMES["fvd"].format(horizon=config.horizon, size=dataset.image_size),
    }
    summary["seconds"] = round(time.perf_counter() - started, 1)
    examples = _examples(collected, predicted, masks, episodes, binding, dataset, config)
    return Evaluation(clean_json(summary), examples, frame_scores["psnr"].numpy())


def _truth_reason(dataset: Dataset) -> str | None:
    """Why correspondence and edits cannot be scored on this dataset, or None when they can."""
    if not dataset.has_ground_truth:
        return "the dataset has no ground truth (imported video): no entity positions or masks to compare with"
    if dataset.n_entities == 0:
        return "the dataset has no entities"
    return None


def _collect(
    model: WorldModel, dataset: Dataset, episodes: list[int], config: EvalConfig, do_edits: bool, log: Log
) -> _Collected:
    """The batched pass: read every episode, roll out, and (for the first episodes) roll out every slot edit."""
    c, h = config.context, config.horizon
    out = _Collected()
    for first in range(0, len(episodes), config.batch_size):
        ids = episodes[first : first + config.batch_size]
        log(f"rolling out episodes {first + 1}-{first + len(ids)} of {len(episodes)}")
        frames = torch.from_numpy(dataset.frames_for(ids))  # uint8 [B, T, Hpx, Wpx, 3]
        z, inference = model.analyse(frames)  # z [B, T, E, h, w]
        recon = model.decode(z)  # uint8 [B, T, Hpx, Wpx, 3]
        out.tokenizer_psnr.append(psnr(recon.flatten(0, 1), frames.flatten(0, 1)))  # [B*T]
        start = model.start(z[:, :c])
        actions = inference.actions[:, c - 1 : c - 1 + h]  # [B, H, K, A]: transition t -> t+1 for t = C-1..
        result = rollout(model, start, actions)
        out.truth.append(frames[:, c : c + h])
        out.last_context.append(frames[:, c - 1])
        out.predicted.append(result.frames)
        out.slots.append(inference.slots.float().cpu())
        out.masks.append(inference.masks.float().cpu())
        out.rates.append(inference.rates().cpu())
        keep = max(0, config.examples - first)
        if keep:
            out.example_truth.append(frames[:keep, : c + h])
        n_edit = min(len(ids), config.edit_episodes - first) if do_edits else 0
        if n_edit > 0:
            edited = _edit_rollouts(model, start.select(slice(0, n_edit)), actions[:n_edit], ids[:n_edit], config)
            out.edits_base.append(result.frames[:n_edit].numpy())
            out.edits.append(edited)
    return out


def _edit_rollouts(
    model: WorldModel, start: LAMState, actions: torch.Tensor, ids: list[int], config: EvalConfig
) -> np.ndarray:
    """uint8 [B, K, H, Hpx, Wpx, 3]: for every slot k, its actions [B, H, K, A] replaced by prior samples."""
    b, h, k, a = actions.shape
    prior = torch.stack([prior_actions(h, k, a, seed=_edit_seed(config.seed, e)) for e in ids])  # [B, H, K, A]
    plans = actions.cpu().float()[None].repeat(k, 1, 1, 1, 1)  # [K(edited slot), B, H, K, A]
    for slot in range(k):
        plans[slot, :, :, slot] = prior[:, :, slot]
    starts = LAMState.cat([start] * k)  # batch order: edited slot major, episode minor
    frames = rollout(model, starts, plans.flatten(0, 1)).frames  # uint8 [K*B, H, ...]
    return frames.unflatten(0, (k, b)).transpose(0, 1).numpy()  # [B, K, H, ...]


def _edit_seed(seed: int, episode: int) -> int:
    """Prior-sample seed of one episode's edits: fixed by the run seed and the episode, not the batch."""
    return seed * 1_000_003 + episode


@torch.inference_mode()
def _frame_scores(predicted: torch.Tensor, truth: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """PSNR, SSIM and ST-LPIPS of every episode and step, each [V, H]."""
    v, h = predicted.shape[:2]
    flat_pred, flat_true = predicted.flatten(0, 1), truth.flatten(0, 1)  # uint8 [V*H, ...]
    lpips_model = load_stlpips(device)
    lpips = stlpips_frames(lpips_model, as_float_frames(flat_pred), as_float_frames(flat_true)).cpu()  # [V*H]
    return {
        "psnr": psnr(flat_pred, flat_true).reshape(v, h).double(),
        "ssim": ssim(flat_pred, flat_true).reshape(v, h).double(),
        "st_lpips": lpips.reshape(v, h).double(),
    }


def _copy_psnr(truth: torch.Tensor, last_context: torch.Tensor) -> float:
    """Mean PSNR of predicting 'nothing moves': the last context frame [V, ...] against every true frame [V, H, ...]."""
    copies = last_context[:, None].expand_as(truth)  # uint8 [V, H, Hpx, Wpx, 3]
    return float(psnr(copies.flatten(0, 1), truth.flatten(0, 1)).double().mean())


def _fvd(
    truth: torch.Tensor, predicted: torch.Tensor, config: EvalConfig, device: torch.device, log: Log
) -> dict[str, Any]:
    """FVD of the first `fvd_episodes` rollouts against their true frames, or why it was skipped."""
    count = min(config.fvd_episodes, truth.shape[0])
    if config.fvd_episodes == 0:
        return {"fvd": None, "fvd_videos": 0, "fvd_note": "skipped (--fvd-episodes 0)"}
    if config.horizon < MIN_FRAMES:
        return {"fvd": None, "fvd_videos": 0, "fvd_note": f"I3D needs at least {MIN_FRAMES} frames; horizon is shorter"}
    if count < 2:
        return {"fvd": None, "fvd_videos": count, "fvd_note": "FVD needs at least 2 videos"}
    log(f"FVD on {count} episodes")
    value = frechet_video_distance(truth[:count], predicted[:count], device)
    note = "from few videos FVD is biased upwards; compare runs of equal size only"
    return {"fvd": value, "fvd_videos": count, "fvd_note": note}


def entity_cells(positions: np.ndarray, image_size: int, grid: int) -> np.ndarray:
    """Positions [..., N, 2] (row, col) in pixels -> probe-grid cell indices [..., N] in [0, grid²)."""
    side = image_size / grid
    rc = np.clip(np.floor(positions / side).astype(np.int64), 0, grid - 1)  # [..., N, 2]
    return rc[..., 0] * grid + rc[..., 1]


def dci_inputs(
    slots: torch.Tensor, dataset: Dataset, episodes: list[int]
) -> tuple[torch.Tensor, np.ndarray, int, np.ndarray]:
    """Slots [V, T, K, D] of episodes -> the probes' frames [V*T, K, D], each entity's probe-grid cell [V*T, N],
    the number of cells, and each frame's episode [V*T] (the fit/score split keeps episodes whole)."""
    grid = int(dataset.manifest.get("probe_grid") or 8)
    positions = np.stack([dataset.ground_truth(e).positions for e in episodes])  # [V, T, N, 2]
    cells = entity_cells(positions, dataset.image_size, grid).reshape(-1, positions.shape[2])  # [V*T, N]
    groups = np.repeat(np.arange(len(episodes)), slots.shape[1])  # [V*T]
    return slots.flatten(0, 1), cells, grid * grid, groups


def slot_dci(
    slots: torch.Tensor,
    dataset: Dataset,
    episodes: list[int],
    config: EvalConfig,
    log: Log = lambda m: None,
    rates: torch.Tensor | None = None,
) -> dict[str, Any]:
    """DCI of the slots [V, T, K, D] for the entities' probe-grid cells, with the random reference.

    With the slots' mean action rates [K], also DCI over the action slots alone (`on_action_slots`, when two or
    more but not all slots act): the paper scores K = 4 slots for 4 agents, so no slot holds the background, while
    our K = agents + 2 leaves slots for the background, and those can read the agents' positions off the holes the
    agents cut in their attention. The action slots are picked by the model's own rates, never by the ground
    truth; the all-slot scores stay the headline.
    """
    if len(episodes) < 3:
        return not_applicable(
            "DCI fits probes on some episodes (their penalties picked on part of those) and scores them on others: "
            "needs 3 or more"
        )
    flat, cells, num_cells, groups = dci_inputs(slots, dataset, episodes)
    log(f"DCI probes on {flat.shape[0]} frames ({flat.shape[1]} slots x {cells.shape[1]} entities)")
    probe = ProbeConfig(max_iter=config.probe_iterations)
    result = dci(flat, cells, num_cells, config.dci_fit_fraction, config.seed, groups, probe)
    random = dci_random_reference(
        tuple(flat.shape), cells, num_cells, config.dci_fit_fraction, config.seed, groups, probe
    )
    record = {
        "applicable": True,
        **_dci_record(result),
        "random": {name: getattr(random, name) for name in DCI_SCORES},
        "probe": {
            "grid": math.isqrt(num_cells),
            "frames": int(flat.shape[0]),
            "fit_fraction": config.dci_fit_fraction,
            "l2_grid": list(probe.l2_grid),
            "l2": result.l2.tolist(),  # [K][N] the penalty picked for each probe on the fit episodes
        },
    }
    active = [] if rates is None else action_slot_indices(rates)
    if 2 <= len(active) < flat.shape[1]:
        # The same probes, restricted to the action slots' rows of R (completeness is then normalised over those
        # slots, as the paper's K = 4 is); matching in the model's slot numbers.
        sub = dci_from_importance(result.importance[active], result.accuracy[active], probe.min_importance)
        record["on_action_slots"] = {
            "slots": active,
            **{name: getattr(sub, name) for name in DCI_SCORES},
            "matching": [[active[i], j] for i, j in sub.matching],
        }
    return record


def _dci_record(result: DCIResult) -> dict[str, Any]:
    return {
        "disentanglement": result.disentanglement,
        "completeness": result.completeness,
        "informativeness": result.informativeness,
        "importance": result.importance.tolist(),
        "matching": [list(pair) for pair in result.matching],
        "accuracy": result.accuracy.tolist(),
    }


def slot_binding(masks: torch.Tensor, dataset: Dataset, episodes: list[int]) -> dict[str, Any]:
    """Which slot holds which entity: share[k][n] of entity n's token mass in slot k's mask, the matching, and how
    often each entity passes from one slot to another between frames.

    masks [V, T, K, h, w] were read off the ground-truth frames; share sums to 1 over slots for every entity.
    """
    n = dataset.n_entities
    k, grid = masks.shape[2], masks.shape[-1]
    mass = torch.zeros(k, n, dtype=torch.float64)  # [K, N]
    handovers = torch.zeros(n, dtype=torch.float64)  # [N] transitions where another slot took the entity
    transitions = torch.zeros(n, dtype=torch.float64)  # [N] transitions where the entity is in both frames
    for index, episode in enumerate(episodes):
        tokens = torch.from_numpy(token_masks(dataset.ground_truth(episode).entity_map, grid, n)).double()
        per_frame = torch.einsum("tkhw,tnhw->tkn", masks[index].double(), tokens)  # [T, K, N]
        mass += per_frame.sum(dim=0)
        owner = per_frame.argmax(dim=1)  # [T, N]
        seen = tokens.sum(dim=(-1, -2)) > 0  # [T, N]
        both = seen[1:] & seen[:-1]
        handovers += ((owner[1:] != owner[:-1]) & both).sum(dim=0)
        transitions += both.sum(dim=0)
    share = mass / mass.sum(dim=0, keepdim=True).clamp_min(1e-12)  # [K, N]
    slot_idx, entity_idx = scipy.optimize.linear_sum_assignment(share.numpy(), maximize=True)
    targets: list[int | None] = [None] * k
    for slot, entity in zip(slot_idx, entity_idx, strict=True):
        targets[int(slot)] = int(entity)
    return {
        "share": share.tolist(),
        "dominant_slot": share.argmax(dim=0).tolist(),  # [N] the slot holding most of each entity
        "slot_entity": targets,  # [K] the entity matched to each slot, None for background slots
        # [N] share of frame-to-frame transitions in which the slot holding most of the entity changes: a slot that
        # swaps entities moves one entity when edited in some frames and another in the rest
        "handover": (handovers / transitions.clamp_min(1)).tolist(),
        "rule": BINDING_RULE,
    }


def edit_scores(
    base: np.ndarray,
    edited: np.ndarray,
    dataset: Dataset,
    episodes: list[int],
    targets: list[int | None],
    config: EvalConfig,
) -> dict[str, Any]:
    """edit_locality and edit_effect over matched slots, with per-slot detail and background slots apart.

    base uint8 [V, H, Hpx, Wpx, 3] are the unedited rollouts of `episodes`, edited [V, K, H, ...] the rollouts
    with slot k edited; targets [K] the entity each slot is matched to (None: background). Entity masks are the
    ground truth of the frames the rollout predicts (context .. context + horizon - 1).
    """
    c, h = config.context, config.horizon
    n, k = dataset.n_entities, edited.shape[1]
    local = [[] for _ in range(k)]  # per slot: locality of every edit that changed something
    effect = [[] for _ in range(k)]  # per slot: whether the edit moved its target (matched slots)
    changed = [[] for _ in range(k)]  # per slot: whether the edit changed any pixel
    # per slot and entity: whether the edit visibly moved that entity. Shows which agent a slot's action steers,
    # which need not be the agent its mask holds (a slot can own an agent's look while another carries its action).
    moves = np.zeros((k, n))
    for index in range(base.shape[0]):
        entity_map = dataset.ground_truth(episodes[index]).entity_map[c : c + h]  # [H, Hpx, Wpx]
        entity_masks = entity_map[None] == np.arange(1, n + 1)[:, None, None, None]  # [N, H, Hpx, Wpx]
        for slot in range(k):
            target = targets[slot]
            others = np.delete(entity_masks, target, axis=0) if target is not None else entity_masks
            score = edit_locality(base[index], edited[index, slot], others)
            changed[slot].append(not math.isnan(score))
            if not math.isnan(score):
                local[slot].append(score)
            moved = [edit_effect(base[index], edited[index, slot], entity_masks[e]) for e in range(n)]
            moves[slot] += np.asarray(moved, dtype=np.float64) / base.shape[0]
            if target is not None:
                effect[slot].append(moved[target])
    matched = [s for s in range(k) if targets[s] is not None]
    background = [s for s in range(k) if targets[s] is None]
    per_slot = [
        {
            "slot": s,
            "entity": targets[s],
            "locality": _mean(local[s]),
            "effect": _mean(effect[s]) if targets[s] is not None else None,
            "changed": _mean(changed[s]),
            "edits": len(changed[s]),
            "moves": moves[s].tolist(),  # [N] share of this slot's edits that visibly moved each entity
        }
        for s in range(k)
    ]
    matched_local = [x for s in matched for x in local[s]]
    matched_effect = [x for s in matched for x in effect[s]]
    return {
        "edit_locality": _mean(matched_local),
        "edit_effect": _mean(matched_effect),
        "edits": {
            "n_episodes": int(base.shape[0]),
            "n_edits": len(matched_effect),
            "dead_edits": int(sum(not x for s in matched for x in changed[s])),
            "per_slot": per_slot,
            "background": {
                "slots": background,
                "locality": _mean([x for s in background for x in local[s]]),
                "changed": _mean([x for s in background for x in changed[s]]),
                "note": "slots matched to no entity: their locality is the share of change outside every entity",
            },
            "target_rule": BINDING_RULE,
            "how": "each slot's actions on every step replaced by prior samples N(0, I); the others keep their "
            "inferred actions; change is measured against the unedited rollout over the horizon; background "
            "slots and edits that change nothing are left out of edit_locality (dead edits count against "
            "edit_effect)",
            "prior_seed": f"seed * 1000003 + episode (seed {config.seed})",
        },
    }


def _mean(values: list[float] | list[bool]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _examples(
    collected: _Collected,
    predicted: torch.Tensor,
    masks: torch.Tensor,
    episodes: list[int],
    binding: dict[str, Any] | None,
    dataset: Dataset,
    config: EvalConfig,
) -> Examples:
    """The first few episodes' frames and masks, and the first episode's edits, for figures."""
    count = min(config.examples, len(episodes))
    window = config.context + config.horizon
    truth = torch.cat(collected.example_truth).numpy() if collected.example_truth else np.zeros((0,))
    edit = None
    if collected.edits and binding is not None:
        edit = EditExample(episodes[0], collected.edits_base[0][0], collected.edits[0][0], binding["slot_entity"])
    colors = [list(c) for c in dataset.manifest.get("entity_colors") or []]
    return Examples(episodes[:count], truth, predicted[:count].numpy(), masks[:count, :window].numpy(), edit, colors)


def _identity(model: WorldModel, checkpoint: Path | None) -> dict[str, Any]:
    return {
        **model.identity,
        "path": str(checkpoint) if checkpoint is not None else None,
        "n_slots": model.n_slots,
        "action_dim": model.action_dim,
        "parameters": sum(p.numel() for p in model.lam.parameters()),
        "tokenizer_parameters": sum(p.numel() for p in model.tokenizer.parameters()),
    }


def _data_record(dataset: Dataset, config: EvalConfig) -> dict[str, Any]:
    manifest = dataset.manifest
    source = manifest.get("source") or {}
    return {
        "path": str(dataset.path),
        "world": manifest.get("world"),
        "split": config.split,
        "n_agents": manifest.get("n_agents"),
        "has_ground_truth": dataset.has_ground_truth,
        "frames_per_episode": dataset.frames_per_episode,
        "image_size": dataset.image_size,
        "command": source.get("command") if isinstance(source, dict) else None,
        "episodes": select_episodes(dataset, config),
    }


def paired_psnr_difference(a: Evaluation, b: Evaluation) -> dict[str, Any]:
    """Mean PSNR of a minus b over the same episodes, with a 95% interval from the per-episode differences."""
    if a.summary["data"]["episodes"] != b.summary["data"]["episodes"]:
        raise ValueError("a paired comparison needs both runs evaluated on the same episodes")
    diff = a.psnr_frames.mean(axis=1) - b.psnr_frames.mean(axis=1)  # [V] per-episode difference
    half = 1.96 * diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else None
    return clean_json(
        {
            "a": a.summary["checkpoint"]["name"],
            "b": b.summary["checkpoint"]["name"],
            "psnr_difference": float(diff.mean()),
            "ci95": half,
            "episodes": len(diff),
        }
    )


def clean_json(value: Any) -> Any:
    """A JSON-safe copy: NaN and infinities become None, numpy scalars plain numbers, floats rounded to 6 places."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return round(float(value), 6) if math.isfinite(value) else None
    return value
