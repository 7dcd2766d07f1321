"""Pictures of an episode a person can look at: a contact-sheet PNG or an animated GIF.

Where ground truth exists, each entity's mask is drawn as an outline in a light shade of its colour just
outside its pixels, and each agent's action between t and t+1 is printed under frame t as a coloured code
(e.g. F = forward). A legend line names the entities and the codes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from flam.worlds.episode import GroundTruth

BACKGROUND = (250, 250, 250)
INK = (30, 30, 30)
LINE = 14  # pixels per text line


@dataclass(frozen=True)
class SheetConfig:
    """Layout of contact sheets and GIFs."""

    columns: int = 8  # frames per row of a contact sheet
    min_frame_px: int = 128  # frames are scaled up by an integer factor to at least this many pixels
    max_frames: int = 0  # show only the first n frames (0 = all)
    gif_ms: int = 150  # milliseconds per GIF frame
    pad: int = 6  # pixels between frames


def action_codes(action_names: list[str] | None) -> list[str]:
    """One short code per action: the capitalised first letter of its last word, or its index if ambiguous."""
    if not action_names:
        return []
    codes = [name.split()[-1][0].upper() for name in action_names]
    return codes if len(set(codes)) == len(codes) else [str(i) for i in range(len(action_names))]


def _outlines(image: np.ndarray, entity_map: np.ndarray, colors: list[list[int]], scale: int) -> np.ndarray:
    """uint8 [H·s,W·s,3]: a frame scaled up by s with a 1-pixel outline around each entity's mask."""
    big = image.repeat(scale, 0).repeat(scale, 1)  # [Hs,Ws,3]
    ids = entity_map.repeat(scale, 0).repeat(scale, 1)  # [Hs,Ws]
    for k, color in enumerate(colors):
        mask = ids == k + 1  # [Hs,Ws]
        if not mask.any():
            continue
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        light = (np.asarray(color, np.float32) * 0.5 + 127.5).astype(np.uint8)  # halfway to white
        big[grown & ~mask] = light
    return big


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's bundled font (no system font needed)."""
    return ImageFont.load_default(size=11)


def _legend(colors: list[list[int]], n_agents: int, action_names: list[str] | None) -> list[list[tuple]]:
    """Legend as lines of (text, colour) runs: entities, then the action codes."""
    line: list[tuple] = [("entities: ", INK)]
    for k, color in enumerate(colors):
        name = f"agent {k}" if k < n_agents else f"distractor {k - n_agents}"
        line += [("", tuple(color)), (f"{name}   ", INK)]
    lines = [line] if colors else [[("no ground truth (imported video): no masks or actions", INK)]]
    codes = action_codes(action_names)
    if codes:
        pairs = ", ".join(f"{c} = {n}" for c, n in zip(codes, action_names, strict=True))
        lines.append([(f"actions from t to t+1: {pairs}", INK)])
    return lines


def _draw_runs(draw: ImageDraw.ImageDraw, x: int, y: int, runs: list[tuple]) -> None:
    """Draw (text, colour) runs side by side; a run with empty text is a colour swatch."""
    font = _font()
    for text, color in runs:
        if text:
            draw.text((x, y), text, fill=tuple(color), font=font)
            x += int(draw.textlength(text, font=font))
        else:
            draw.rectangle((x, y + 2, x + 9, y + 11), fill=tuple(color), outline=INK)
            x += 13


@dataclass(frozen=True)
class EpisodeView:
    """Everything needed to draw one episode."""

    frames: np.ndarray  # uint8 [T,H,W,3]
    truth: GroundTruth | None
    colors: list[list[int]]  # RGB per entity
    n_agents: int
    action_names: list[str] | None
    title: str


def _action_runs(view: EpisodeView, t: int, codes: list[str]) -> list[tuple]:
    """Each agent's action code between frame t and t+1, in its colour (empty for the last frame)."""
    if view.truth is None or t >= view.truth.actions.shape[0] or not codes:
        return []
    actions = view.truth.actions[t, : view.n_agents]  # [N_agents]
    return [(codes[int(a)] + " ", view.colors[k]) for k, a in enumerate(actions)]


def _prepare(view: EpisodeView, config: SheetConfig) -> tuple[list[np.ndarray], int]:
    """Scaled-up frames with mask outlines, and the scale factor."""
    count = len(view.frames) if config.max_frames <= 0 else min(config.max_frames, len(view.frames))
    height = view.frames.shape[1]
    scale = max(1, -(-config.min_frame_px // height))
    images = []
    for t in range(count):
        if view.truth is None:
            images.append(view.frames[t].repeat(scale, 0).repeat(scale, 1))  # [Hs,Ws,3]
        else:
            images.append(_outlines(view.frames[t], view.truth.entity_map[t], view.colors, scale))
    return images, scale


def contact_sheet(view: EpisodeView, config: SheetConfig = SheetConfig()) -> Image.Image:
    """The episode as one image: frames in a grid with t labels, action codes, and a legend."""
    images, _ = _prepare(view, config)
    codes = action_codes(view.action_names) if view.truth is not None else []
    side, pad = images[0].shape[0], config.pad
    columns = min(config.columns, len(images))
    rows = -(-len(images) // columns)
    cell_h = LINE + side + (LINE if codes else 0) + pad
    legend = _legend(view.colors if view.truth is not None else [], view.n_agents, view.action_names)
    width = pad + columns * (side + pad)
    height = LINE + pad + rows * cell_h + len(legend) * LINE + pad
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _draw_runs(draw, pad, 2, [(view.title, INK)])
    for t, image in enumerate(images):
        x = pad + (t % columns) * (side + pad)
        y = LINE + pad + (t // columns) * cell_h
        _draw_runs(draw, x, y, [(f"t={t}", INK)])
        sheet.paste(Image.fromarray(image), (x, y + LINE))
        if codes:
            _draw_runs(draw, x, y + LINE + side, _action_runs(view, t, codes))
    for i, runs in enumerate(legend):
        _draw_runs(draw, pad, LINE + pad + rows * cell_h + i * LINE, runs)
    return sheet


def gif_frames(view: EpisodeView, config: SheetConfig = SheetConfig()) -> list[Image.Image]:
    """The episode as animation frames, each with a caption bar: t and the agents' action codes."""
    images, _ = _prepare(view, config)
    codes = action_codes(view.action_names) if view.truth is not None else []
    side = images[0].shape[0]
    out = []
    for t, image in enumerate(images):
        frame = Image.new("RGB", (side, side + LINE + 2), BACKGROUND)
        frame.paste(Image.fromarray(image), (0, LINE + 2))
        _draw_runs(ImageDraw.Draw(frame), 2, 1, [(f"t={t} ", INK), *_action_runs(view, t, codes)])
        out.append(frame)
    return out


def save_view(path: str | os.PathLike, view: EpisodeView, config: SheetConfig = SheetConfig()) -> Path:
    """Write a contact sheet (.png) or an animated GIF (.gif), chosen by suffix, atomically."""
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".gif"):
        raise ValueError(f"{out}: expected a .png (contact sheet) or .gif (animation) file name")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        if suffix == ".png":
            contact_sheet(view, config).save(tmp, format="PNG", optimize=True)
        else:
            first, *rest = gif_frames(view, config)
            first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=config.gif_ms, loop=0)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
