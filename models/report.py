"""Evaluation reports: PNG figures (matplotlib, no display needed) and a markdown page that shows them.

Slot k has the colour SLOT_COLORS[k % len(SLOT_COLORS)] in every figure; the UI uses the same palette, so a
slot looks the same in a report and on screen. The module needs numpy and matplotlib only (no torch).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flam.models.lam import ACTIVE_RATE
from flam.models.metrics.dci import DCI_SCORES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from flam.models.evaluation.protocol import EditExample, Evaluation

# One colour per slot index (RGB, 0..255), the same in every figure and in the UI.
SLOT_COLORS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (57, 59, 121),
    (173, 73, 74),
    (99, 121, 57),
    (206, 109, 189),
    (140, 162, 82),
    (107, 110, 207),
)
DIFF_GAIN = 4  # difference images show |a - b| × this, so small errors are visible


@dataclass(frozen=True)
class ReportConfig:
    """How figures look."""

    dpi: int = 100
    frame_inches: float = 0.9  # size of one frame in a strip
    mask_alpha: float = 0.6  # opacity of the slot colours over a frame
    edit_steps: int = 3  # frames per edit row (evenly spaced over the horizon)


def slot_color(slot: int) -> tuple[int, int, int]:
    """The colour of slot `slot` (the palette repeats after 16 slots)."""
    return SLOT_COLORS[slot % len(SLOT_COLORS)]


def _unit(color: Sequence[int]) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in color[:3])  # type: ignore[return-value]


def difference_frames(a: np.ndarray, b: np.ndarray, gain: int = DIFF_GAIN) -> np.ndarray:
    """uint8 [T, H, W, 3]: grey |a - b| (mean over RGB) × gain, clipped; white = large difference."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1) * gain  # [T, H, W]
    grey = np.clip(diff, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def mask_overlay(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """uint8 [T, H, W, 3]: each pixel tinted with the colour of the slot whose mask wins its token.

    frames [T, H, W, 3]; masks [T, K, h, w] (softmax over K, with a background sink's share left out); the tint's
    opacity is alpha × the winning mask value, so a token left to the sink stays nearly untinted.
    """
    t, height, width, _ = frames.shape
    k, h = masks.shape[1], masks.shape[2]
    scale = height // h
    palette = np.asarray([slot_color(i) for i in range(k)], dtype=np.float64)  # [K, 3]
    winner = masks.argmax(axis=1)  # [T, h, w]
    strength = masks.max(axis=1) * alpha  # [T, h, w]
    color = palette[winner].repeat(scale, axis=1).repeat(scale, axis=2)  # [T, H, W, 3]
    weight = strength.repeat(scale, axis=1).repeat(scale, axis=2)[..., None]  # [T, H, W, 1]
    out = frames.astype(np.float64) * (1 - weight) + color * weight
    return np.clip(out, 0, 255).astype(np.uint8)


def _new_figure(width: float, height: float, config: ReportConfig) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=config.dpi)


def save_figure(figure: Figure, path: Path) -> Path:
    """Write a PNG atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    figure.savefig(tmp, format="png", bbox_inches="tight")
    os.replace(tmp, path)
    return path


def write_text(path: Path, text: str) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


FIGURE_MANIFEST = ".figures"  # in a report folder: the figures its README shows, one name per line


def write_report_page(out: Path, text: str) -> Path:
    """Write out/README.md and remove the figures an earlier report in `out` showed and this one does not.

    Only names from the folder's manifest are removed, so files a person keeps beside a report stay.
    """
    shown = sorted(set(re.findall(r"\]\(([^()/]+\.png)\)", text)))
    manifest = Path(out) / FIGURE_MANIFEST
    if manifest.is_file():
        for name in set(manifest.read_text().split()) - set(shown):
            (manifest.parent / name).unlink(missing_ok=True)
    page = write_text(Path(out) / "README.md", text)
    write_text(manifest, "".join(f"{name}\n" for name in shown))
    return page


Cells = Sequence[np.ndarray | None]  # a row of frames [H, W, 3]; None leaves a cell blank


def frame_grid(
    rows: Sequence[tuple[str, Cells]],
    path: Path,
    column_labels: Sequence[str] | None = None,
    title: str | None = None,
    config: ReportConfig = ReportConfig(),
) -> Path:
    """A grid of frames with one labelled row per (label, cells); short rows end in blank cells.

    The frames are tiled into one image (one axes: fast to draw), with white gaps between them.
    """
    n_cols = max(len(cells) for _, cells in rows)
    height, width = next(c for _, cells in rows for c in cells if c is not None).shape[:2]
    gap = max(2, height // 16)
    canvas = np.full((len(rows) * (height + gap) - gap, n_cols * (width + gap) - gap, 3), 255, np.uint8)
    for r, (_, cells) in enumerate(rows):
        for c, frame in enumerate(cells):
            if frame is not None:
                y, x = r * (height + gap), c * (width + gap)
                canvas[y : y + height, x : x + width] = frame
    size = config.frame_inches
    figure = _new_figure(1.6 + n_cols * size, 0.5 + len(rows) * size, config)
    ax = figure.subplots()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([r * (height + gap) + height / 2 for r in range(len(rows))], [label for label, _ in rows])
    ax.tick_params(length=0, labelsize=8)
    if column_labels is not None:
        ax.xaxis.tick_top()
        ax.set_xticks([c * (width + gap) + width / 2 for c in range(len(column_labels))], list(column_labels))
        ax.tick_params(axis="x", labelsize=7)
    else:
        ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9, pad=18 if column_labels is not None else 6)
    return save_figure(figure, path)


def rollout_strip(
    truth: np.ndarray,
    predictions: Sequence[tuple[str, np.ndarray]],
    context: int,
    path: Path,
    title: str | None = None,
    config: ReportConfig = ReportConfig(),
) -> Path:
    """Ground truth [C+H, ...] over each model's prediction [H, ...] and its difference from the truth."""
    future = truth[context:]
    blank: list[np.ndarray | None] = [None] * context
    rows: list[tuple[str, Cells]] = [("ground truth", list(truth))]
    rows += [(label, blank + list(frames)) for label, frames in predictions]
    rows += [
        (f"|{label} − truth| ×{DIFF_GAIN}", blank + list(difference_frames(frames, future)))
        for label, frames in predictions
    ]
    labels = [f"t={t}" + (" (ctx)" if t < context else "") for t in range(truth.shape[0])]
    return frame_grid(rows, path, labels, title, config)


def mask_strip(
    frames: np.ndarray, masks: np.ndarray, path: Path, title: str | None = None, config: ReportConfig = ReportConfig()
) -> Path:
    """Frames [T, H, W, 3] over the same frames tinted by slot (masks [T, K, h, w]), plus one row per slot mask."""
    scale = frames.shape[1] // masks.shape[2]
    rows: list[tuple[str, Cells]] = [
        ("frames", list(frames)),
        ("slots", list(mask_overlay(frames, masks, config.mask_alpha))),
    ]
    for slot in range(masks.shape[1]):
        soft = masks[:, slot].repeat(scale, axis=1).repeat(scale, axis=2)[..., None]  # [T, H, W, 1]
        tint = np.asarray(slot_color(slot), dtype=np.float64)
        image = 255.0 * (1 - soft) + tint * soft  # white where the slot has nothing, its colour where it has all
        rows.append((f"slot {slot}", list(np.clip(image, 0, 255).astype(np.uint8))))
    labels = [f"t={t}" for t in range(frames.shape[0])]
    return frame_grid(rows, path, labels, title, config)


def matrix_figure(
    matrix: np.ndarray,
    path: Path,
    title: str,
    value_label: str,
    entity_colors: Sequence[Sequence[int]] | None = None,
    marked: Sequence[Sequence[int]] = (),
    entity_names: Sequence[str] | None = None,
    config: ReportConfig = ReportConfig(),
) -> Path:
    """Heatmap of a slots × entities matrix [K, N] with values written in; `marked` (slot, entity) cells boxed."""
    from matplotlib.patches import Rectangle

    k, n = matrix.shape
    figure = _new_figure(1.6 + 0.7 * n, 1.0 + 0.45 * k, config)
    ax = figure.subplots()
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(1.0, float(np.nanmax(matrix)) if matrix.size else 1))
    for i in range(k):
        for j in range(n):
            value = matrix[i, j]
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "k")
    for slot, entity in marked:
        ax.add_patch(Rectangle((entity - 0.5, slot - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    names = list(entity_names) if entity_names is not None else [f"entity {j}" for j in range(n)]
    ax.set_xticks(range(n), names, fontsize=7, rotation=30 if n > 4 else 0)
    ax.set_yticks(range(k), [f"slot {i}" for i in range(k)], fontsize=7)
    for i, label in enumerate(ax.get_yticklabels()):
        label.set_color(_unit(slot_color(i)))
    if entity_colors:
        for j, label in enumerate(ax.get_xticklabels()):
            if j < len(entity_colors):
                label.set_color(_unit(entity_colors[j]))
    ax.set_title(title, fontsize=9)
    figure.colorbar(image, ax=ax, label=value_label, shrink=0.8)
    return save_figure(figure, path)


def line_plot(
    series: dict[str, Sequence[float]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str,
    x: Sequence[float] | None = None,
    config: ReportConfig = ReportConfig(),
) -> Path:
    """One line with markers per series; x defaults to 1..len."""
    figure = _new_figure(4.8, 3.2, config)
    ax = figure.subplots()
    for label, values in series.items():
        xs = list(x) if x is not None else list(range(1, len(values) + 1))
        ys = [math.nan if v is None else v for v in values]
        ax.plot(xs, ys, marker="o", label=label)
    if x is not None and len(x) <= 12:  # a tick per point only while they stay readable
        ax.set_xticks(list(x))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(figure, path)


def edit_figure(edit: EditExample, path: Path, names: Sequence[str], config: ReportConfig = ReportConfig()) -> Path:
    """For every slot: the edited rollout at a few steps beside where its pixels changed; the unedited on top."""
    horizon = edit.base.shape[0]
    spaced = np.linspace(horizon / config.edit_steps - 1, horizon - 1, config.edit_steps)
    steps = sorted({int(round(s)) for s in spaced})
    rows: list[tuple[str, Cells]] = [("unedited", list(edit.base[steps]))]
    for slot in range(edit.edited.shape[0]):
        target = edit.targets[slot]
        who = names[target] if target is not None else "background"
        after = edit.edited[slot][steps]  # [S, H, W, 3]
        rows.append((f"slot {slot} → {who}", list(after) + list(difference_frames(after, edit.base[steps]))))
    labels = [f"t={s + 1}" for s in steps] + [f"Δ t={s + 1}" for s in steps]
    title = (
        f"episode {edit.episode}: each slot's actions replaced by prior samples, the others kept "
        f"(Δ: change ×{DIFF_GAIN})"
    )
    return frame_grid(rows, path, labels, title, config)


def entity_names(count: int) -> list[str]:
    return [f"entity {j}" for j in range(count)]


def dci_scores(record: dict[str, Any], digits: int = 3) -> str:
    """ "D / C / I" of a DCI record, e.g. "0.758 / 0.598 / 0.926"."""
    return " / ".join(_fmt(record[name], digits) for name in DCI_SCORES)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _rates(rates: Sequence[float] | None) -> str:
    """Each slot's mean KL from the prior, e.g. "0.0 / 2.0 / 2.2": which slots carry action information."""
    return "–" if not rates else " / ".join(f"{r:.1f}" for r in rates)


def summary_rows(summaries: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(metric label, one formatted value per run) for the headline table."""

    def dci(s: dict[str, Any], key: str) -> str:
        d = s.get("dci") or {}
        if not d.get("applicable"):
            return "n/a"
        return f"{d[key]:.3f} (random {d['random'][key]:.3f})"

    def action_dci(s: dict[str, Any]) -> str:
        sub = (s.get("dci") or {}).get("on_action_slots")
        if not isinstance(sub, dict):
            return "–"
        return f"{dci_scores(sub)} (slots {', '.join(map(str, sub['slots']))})"

    rows = [
        ("PSNR ↑ (dB)", [_fmt(s["psnr"], 2) for s in summaries]),
        ("SSIM ↑", [_fmt(s["ssim"], 4) for s in summaries]),
        ("ST-LPIPS ↓", [_fmt(s["st_lpips"], 4) for s in summaries]),
        ("FVD ↓", [f"{_fmt(s['fvd'], 1)} ({s.get('fvd_videos', 0)} videos)" for s in summaries]),
        ("tokenizer PSNR ↑ (dB)", [_fmt(s["tokenizer_psnr"], 2) for s in summaries]),
        ("reference: repeat last context frame, PSNR (dB)", [_fmt(s.get("copy_psnr"), 2) for s in summaries]),
        ("DCI disentanglement ↑", [dci(s, "disentanglement") for s in summaries]),
        ("DCI completeness ↑", [dci(s, "completeness") for s in summaries]),
        ("DCI informativeness ↑", [dci(s, "informativeness") for s in summaries]),
        ("DCI D / C / I over the action slots only ↑", [action_dci(s) for s in summaries]),
        ("edit locality ↑", [_fmt(s.get("edit_locality")) for s in summaries]),
        ("edit effect ↑", [_fmt(s.get("edit_effect")) for s in summaries]),
        ("action rate per slot (nats)", [_rates(s.get("slot_rates")) for s in summaries]),
        (f"slots carrying actions (rate ≥ {ACTIVE_RATE} nats)", [str(s.get("action_slots", "–")) for s in summaries]),
    ]
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(labels: Sequence[str], summaries: Sequence[dict[str, Any]]) -> str:
    """The headline metrics of one or more runs as a markdown table."""
    return markdown_table(["metric", *labels], [[name, *values] for name, values in summary_rows(summaries)])


def run_label(summary: dict[str, Any]) -> str:
    """A run's name in tables and figures: the model kind in words."""
    kind = summary["checkpoint"]["kind"]
    return {"flam": "FLAM", "monolithic": "monolithic"}.get(kind, kind)


def write_eval_report(out: Path, runs: Sequence[Evaluation], title: str, config: ReportConfig = ReportConfig()) -> Path:
    """Figures and `README.md` in `out` for one run or for several runs on the same episodes (a comparison)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = [run.summary for run in runs]
    episode_lists = {tuple(s["data"]["episodes"]) for s in summaries}
    if len(episode_lists) != 1:
        raise ValueError("a comparison report needs every run evaluated on the same episodes")
    labels = run_labels(summaries)
    first = runs[0]
    protocol = first.summary["protocol"]
    context = protocol["context"]
    examples = first.examples
    n_entities = len(examples.entity_colors)
    names = entity_names(n_entities)
    parts = [f"# {title}", "", _intro(summaries), "", "## Summary", "", summary_table(labels, summaries), ""]

    parts += ["## Rollouts", "", _rollout_text(context, protocol["horizon"]), ""]
    for x, episode in enumerate(examples.episodes):
        predictions = [(label, run.examples.predicted[x]) for label, run in zip(labels, runs, strict=True)]
        name = f"rollout-episode-{episode}.png"
        rollout_strip(examples.truth[x], predictions, context, out / name, f"test episode {episode}", config)
        parts += [f"![rollout of test episode {episode}]({name})", ""]

    line_plot(
        {label: s["psnr_per_step"] for label, s in zip(labels, summaries, strict=True)},
        out / "psnr-per-step.png",
        "rollout step",
        "PSNR (dB)",
        "PSNR per rollout step (mean over episodes)",
        config=config,
    )
    parts += ["## PSNR per step", "", "![PSNR per step](psnr-per-step.png)", ""]
    rows = [
        [str(step + 1), *[_fmt(s["psnr_per_step"][step], 2) for s in summaries]]
        for step in range(len(summaries[0]["psnr_per_step"]))
    ]
    parts += [markdown_table(["step", *[f"{label} PSNR" for label in labels]], rows), ""]

    for label, run in zip(labels, runs, strict=True):
        if run.summary["checkpoint"]["kind"] == "flam":
            parts += _slot_sections(label, run, names, out, config)
    parts += ["## How these numbers were made", "", *_protocol_text(summaries[0]), ""]
    return write_report_page(out, "\n".join(parts))


def run_labels(summaries: Sequence[dict[str, Any]]) -> list[str]:
    labels = [run_label(s) for s in summaries]
    if len(set(labels)) == len(labels):
        return labels
    return [f"{label} ({s['checkpoint']['name']})" for label, s in zip(labels, summaries, strict=True)]


def _intro(summaries: Sequence[dict[str, Any]]) -> str:
    s = summaries[0]
    data, protocol = s["data"], s["protocol"]
    lines = [
        f"Data: `{data['path']}` ({data['world']}, {data['n_agents']} agents), split `{data['split']}`, "
        f"{s['n_episodes']} episodes never used in training. Horizon {protocol['horizon']} steps from "
        f"{protocol['context']} context frame(s); actions inferred from the ground-truth frames.",
        "",
    ]
    for run in summaries:
        c = run["checkpoint"]
        lines.append(
            f"- **{run_label(run)}**: `{c['path']}` ({c['kind']}, K = {c['n_slots']} × {c['action_dim']}-d actions, "
            f"{c['parameters']:,} parameters + {c['tokenizer_parameters']:,} tokenizer; weights sha256 "
            f"`{c['weights_sha256'][:12]}`); evaluated in {run['seconds']} s"
        )
    return "\n".join(lines)


def _rollout_text(context: int, horizon: int) -> str:
    return (
        f"Each figure: the ground-truth frames (the first {context} are the context), each model's "
        f"{horizon}-step rollout, and the absolute difference from the truth (×{DIFF_GAIN}; black = exact)."
    )


def _slot_sections(label: str, run: Evaluation, names: Sequence[str], out: Path, config: ReportConfig) -> list[str]:
    """Slot masks, correspondence and edits of one FLAM run."""
    s, examples = run.summary, run.examples
    parts = [f"## {label}: slots", ""]
    if len(examples.episodes):
        episode = examples.episodes[0]
        name = f"slots-{_slug(label)}-episode-{episode}.png"
        mask_strip(
            examples.truth[0], examples.masks[0], out / name, f"{label} slot masks, test episode {episode}", config
        )
        parts += [
            "Slot masks read off the ground-truth frames: each token tinted with the colour of the slot that wins "
            "it (softmax over slots; with a background sink, tokens no slot needs stay untinted), then every slot's "
            "own mask. Slot colours are the same in every figure and in the app.",
            "",
            f"![slot masks]({name})",
            "",
        ]
    binding = s.get("binding")
    if binding:
        share = np.asarray(binding["share"], dtype=np.float64)
        name = f"binding-{_slug(label)}.png"
        matched = [(k, e) for k, e in enumerate(binding["slot_entity"]) if e is not None]
        matrix_figure(
            share,
            out / name,
            "share of each entity's tokens held by each slot",
            "share",
            examples.entity_colors,
            matched,
            names,
            config,
        )
        parts += [
            f"Which slot holds which entity ({binding['rule']}); boxes: the matching.",
            "",
            f"![binding]({name})",
            "",
        ]
        handover = ", ".join(f"{who} {share:.0%}" for who, share in zip(names, binding["handover"], strict=True))
        parts += [f"Transitions in which another slot takes over the entity: {handover}.", ""]
    dci = s.get("dci") or {}
    parts += [f"## {label}: slot–entity correspondence (DCI)", ""]
    if dci.get("applicable"):
        name = f"dci-importance-{_slug(label)}.png"
        matrix_figure(
            np.asarray(dci["importance"]),
            out / name,
            "DCI importance R (probe gain over chance)",
            "importance",
            examples.entity_colors,
            dci["matching"],
            names,
            config,
        )
        random = dci["random"]
        parts += [
            markdown_table(
                ["", *DCI_SCORES],
                [
                    [label, *(_fmt(dci[k]) for k in DCI_SCORES)],
                    [
                        "random representation",
                        *(_fmt(random[k]) for k in DCI_SCORES),
                    ],
                ],
            ),
            "",
            f"Probes: {dci['probe']['frames']} frames, positions as cells of a {dci['probe']['grid']}×"
            f"{dci['probe']['grid']} grid, fitted on {dci['probe']['fit_fraction']:.0%} of the episodes and scored "
            "on the rest; each probe's L2 penalty is picked on part of the fit episodes (from "
            f"{', '.join(f'{value:g}' for value in dci['probe']['l2_grid'])}). Boxes: the Hungarian matching of "
            "slots to entities.",
            "",
            f"![DCI importance]({name})",
            "",
        ]
        sub = dci.get("on_action_slots")
        if isinstance(sub, dict):
            parts += [
                f"Over the action slots alone (slots {', '.join(map(str, sub['slots']))}, picked by their action "
                f"rate, not by the ground truth), D / C / I = {dci_scores(sub)}. The paper scores K = 4 slots for "
                "4 agents, so none of its slots holds the background; here the slots without actions hold the "
                "background (or agents the model gives no action), and a background slot can read the agents' "
                "positions off the holes they cut in its attention.",
                "",
            ]
    else:
        parts += [f"Not applicable: {dci.get('reason', 'no ground truth')}.", ""]
    parts += [f"## {label}: per-slot edits", ""]
    edits = s.get("edits")
    if not edits:
        reason = s["edit_locality"].get("reason") if isinstance(s.get("edit_locality"), dict) else "not run"
        return parts + [f"Not applicable: {reason}.", ""]
    rows = [
        [
            str(p["slot"]),
            names[p["entity"]] if p["entity"] is not None else "background",
            _fmt(p["locality"]),
            _fmt(p["effect"]),
            _fmt(p["changed"]),
            _most_moved(p.get("moves"), names),
            str(p["edits"]),
        ]
        for p in edits["per_slot"]
    ]
    parts += [
        f"edit locality **{_fmt(s['edit_locality'])}**, edit effect **{_fmt(s['edit_effect'])}** over "
        f"{edits['n_edits']} edits of entity slots in {edits['n_episodes']} episodes ({edits['dead_edits']} changed "
        "nothing). " + edits["how"] + ".",
        "",
        markdown_table(
            ["slot", "matched entity (by mask)", "locality", "effect", "changed anything", "moves most", "edits"],
            rows,
        ),
        "",
    ]
    if examples.edit is not None:
        name = f"edits-{_slug(label)}-episode-{examples.edit.episode}.png"
        edit_figure(examples.edit, out / name, names, config)
        parts += [f"![per-slot edits]({name})", ""]
    return parts


def _most_moved(moves: Sequence[float] | None, names: Sequence[str]) -> str:
    """The entity a slot's edits move most often, with that share: "agent 3 (0.83)"; "–" when none moved."""
    if not moves or max(moves) == 0:
        return "–"
    best = int(np.argmax(moves))
    return f"{names[best]} ({moves[best]:.2f})"


def _protocol_text(summary: dict[str, Any]) -> list[str]:
    metrics = summary["metrics"]
    lines = [f"- **{key}**: {text}" for key, text in metrics.items()]
    protocol = summary["protocol"]
    lines.append(
        f"- Episodes: the first {summary['n_episodes']} of the `{protocol['split']}` split; FVD on the first "
        f"{summary.get('fvd_videos', 0)}; edits on the first {protocol['edit_episodes']}; seed {protocol['seed']}."
    )
    if summary.get("fvd_note"):
        lines.append(f"- FVD: {summary['fvd_note']}.")
    return lines


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
