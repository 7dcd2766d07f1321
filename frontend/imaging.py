"""Pictures of the studio in numpy and PIL: slot overlays, legend thumbnails, difference heatmaps, the locality
share, playback GIFs, filmstrips and a check of uploaded frames against the training data.

Frames are uint8 [H, W, 3]; masks are slot weights on the token grid [K, h, w] (sum 1 over K, or less: a model with a
background sink leaves the rest of each cell to a background no slot holds). Every picture is
an integer nearest-neighbour upscale, so each source pixel is a solid block that tests can read back exactly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Stable slot colours (slot k always gets SLOT_COLORS[k % len]): distinct hues that read on dark and light scenes.
SLOT_COLORS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
)
HEAT_STOPS = np.array(
    [(0, 0, 4), (59, 15, 112), (140, 41, 129), (222, 73, 104), (254, 159, 109), (252, 253, 191)], dtype=np.float64
)  # a magma-like ramp: dark = no change, bright = the largest change of the rollout
OVERLAY_ALPHA = 0.5  # weight of the slot colours over the frame
OUTLINE = (255, 255, 255)
PANEL_GAP = 6  # pixels between panels of a playback frame
PLAY_HEADER_H = 22  # the playback's title band
STRIP_GAP = 2  # pixels between filmstrip cells
STRIP_LABEL_W = 84  # the filmstrip's left column with row names
STRIP_HEADER_H = 18  # the filmstrip's top row with step numbers
BACKGROUND = (17, 24, 39)
TEXT = (229, 231, 235)


def slot_color(slot: int) -> tuple[int, int, int]:
    return SLOT_COLORS[slot % len(SLOT_COLORS)]


def hex_color(rgb: tuple[int, int, int] | list[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb[:3]))


def upscale(image: np.ndarray, factor: int, channels: bool = True) -> np.ndarray:
    """Nearest-neighbour upscale by an integer factor of images [..., H, W, C] (or of grids [..., H, W])."""
    rows, cols = (-3, -2) if channels else (-2, -1)
    return np.repeat(np.repeat(image, factor, axis=rows), factor, axis=cols)


# A slot owns a cell it holds this share of even where the background sink holds more: an entity that covers part
# of a token shares it with the background (the 4-agent default gives an agent's cell 0.46 and the sink 0.54 on the
# first frame of a bundled episode), and a click on the entity must still pick its slot.
OWNED_SHARE = 0.1


def masks_to_pixels(masks: np.ndarray, size: int) -> np.ndarray:
    """Slot weights [..., K, h, w] -> [..., K, size, size] (nearest: each token cell is a block of pixels)."""
    return upscale(masks, size // masks.shape[-1], channels=False)


def owners(masks: np.ndarray) -> np.ndarray:
    """Slot weights [..., K, h, w] -> the slot that wins each cell [..., h, w], or -1 where the background (the
    share no slot holds) outweighs every slot and no slot holds OWNED_SHARE of the cell."""
    best = masks.max(axis=-3)
    owned = (best >= 1.0 - masks.sum(axis=-3)) | (best >= OWNED_SHARE)
    return np.where(owned, masks.argmax(axis=-3), -1)


def owned_cells(masks: np.ndarray) -> np.ndarray:
    """Slot weights [..., K, h, w] -> how many cells each slot wins [K]."""
    won = owners(masks)
    return np.bincount(won[won >= 0], minlength=masks.shape[-3])


def slot_at(masks: np.ndarray, x: float, y: float, width: int, height: int) -> int | None:
    """The slot that wins at pixel (x, y) of a picture of the masks [K, h, w] shown at width x height; None on the
    background."""
    grid_h, grid_w = masks.shape[-2:]
    row = min(grid_h - 1, max(0, int(y * grid_h // height)))
    col = min(grid_w - 1, max(0, int(x * grid_w // width)))
    owner = int(owners(masks)[row, col])
    return owner if owner >= 0 else None


def _outline(region: np.ndarray, thickness: int) -> np.ndarray:
    """Boundary pixels [H, W] (inside the region, within `thickness` of its edge) of a bool region [H, W]."""
    inner = region.copy()
    for _ in range(thickness):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[0, :] = shrunk[-1, :] = shrunk[:, 0] = shrunk[:, -1] = False
        inner = shrunk
    return region & ~inner


def overlay(frame: np.ndarray, masks: np.ndarray, selected: int | None, scale: int) -> np.ndarray:
    """The frame [H, W, 3] with slot colours blended by mask weight and the selected slot outlined, upscaled."""
    size = frame.shape[0]
    weights = masks_to_pixels(masks, size)  # [K, H, W]
    palette = np.array([slot_color(k) for k in range(masks.shape[0])], dtype=np.float64)  # [K, 3]
    tint = np.einsum("khw,kc->hwc", weights, palette)  # [H, W, 3]
    mixed = (1 - OVERLAY_ALPHA) * frame.astype(np.float64) + OVERLAY_ALPHA * tint
    out = upscale(np.clip(mixed + 0.5, 0, 255).astype(np.uint8), scale)  # [H*s, W*s, 3]
    if selected is not None:
        region = upscale(owners(masks) == selected, size // masks.shape[-1] * scale, channels=False)  # [H*s, W*s]
        out[_outline(region, max(2, scale // 2))] = OUTLINE
    return out


def slot_thumbnail(frame: np.ndarray, masks: np.ndarray, slot: int, scale: int) -> np.ndarray:
    """What slot `slot` holds: the frame weighted by its mask over a dark ground, framed in the slot's colour."""
    weight = masks_to_pixels(masks, frame.shape[0])[slot][..., None]  # [H, W, 1]
    ground = np.array(BACKGROUND, dtype=np.float64)
    shown = weight * frame.astype(np.float64) + (1 - weight) * ground  # [H, W, 3]
    out = upscale(np.clip(shown + 0.5, 0, 255).astype(np.uint8), scale)
    border = max(3, scale)
    out[:border, :] = out[-border:, :] = out[:, :border] = out[:, -border:] = slot_color(slot)
    return out


def pixel_change(base: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Absolute change per pixel [T, H, W] of frames [T, H, W, 3], summed over RGB (0..765)."""
    return np.abs(edited.astype(np.int32) - base.astype(np.int32)).sum(axis=-1)


def heat(change: np.ndarray, peak: float) -> np.ndarray:
    """Change [..., H, W] -> colours [..., H, W, 3] on the heat ramp, `peak` being the brightest."""
    x = np.clip(change / peak, 0.0, 1.0) if peak > 0 else np.zeros(change.shape)
    position = x * (len(HEAT_STOPS) - 1)
    low = np.floor(position).astype(int).clip(0, len(HEAT_STOPS) - 2)
    frac = (position - low)[..., None]
    colours = HEAT_STOPS[low] * (1 - frac) + HEAT_STOPS[low + 1] * frac
    return np.clip(colours + 0.5, 0, 255).astype(np.uint8)


def slot_region(masks: list[np.ndarray], slot: int, size: int) -> np.ndarray:
    """Pixels [T, H, W] the slot wins in any of the given mask sequences [T, K, h, w] (the entity before and after
    an edit may sit in different places, so the union is its region)."""
    region = np.zeros((masks[0].shape[0], size, size), dtype=bool)
    for sequence in masks:
        region |= masks_to_pixels(owners(sequence) == slot, size)  # [T, H, W]
    return region


def change_share(base: np.ndarray, edited: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """(share of the absolute pixel change inside region [T, H, W], total change); share is nan with no change."""
    change = pixel_change(base, edited)  # [T, H, W]
    total = float(change.sum())
    if total == 0.0:
        return float("nan"), 0.0
    return float(change[region].sum() / total), total


def outlined(frames: np.ndarray, region: np.ndarray, scale: int) -> np.ndarray:
    """Frames [T, H, W, 3] upscaled by `scale` with the boundary of region [T, H, W] drawn in white."""
    out = upscale(frames, scale)  # [T, H*s, W*s, 3]
    big = upscale(region, scale, channels=False)  # [T, H*s, W*s]
    for t in range(out.shape[0]):
        out[t][_outline(big[t], max(1, scale // 3))] = OUTLINE
    return out


@dataclass(frozen=True)
class Playback:
    """The side-by-side animation: panels [P][T, H, W, 3] of equal size shown `scale` times larger under a band of
    titles; panel i with a region in `outlines` [T, H, W] has that region's boundary drawn."""

    panels: list[np.ndarray]
    titles: list[str]
    scale: int
    outlines: dict[int, np.ndarray] = field(default_factory=dict)

    def _layout(self) -> tuple[np.ndarray, np.ndarray]:
        """(native frames [T, H, P*W + gaps, 3] at scale 1, the title band [HEADER, width * scale, 3])."""
        count, height, width = self.panels[0].shape[:3]
        gap = max(1, PANEL_GAP // self.scale)
        native = np.empty((count, height, len(self.panels) * (width + gap) - gap, 3), dtype=np.uint8)
        native[:] = BACKGROUND
        band = Image.new("RGB", (native.shape[2] * self.scale, PLAY_HEADER_H), BACKGROUND)
        draw = ImageDraw.Draw(band)
        for index, panel in enumerate(self.panels):
            left = index * (width + gap)
            native[:, :, left : left + width] = panel
            centre = (left + width / 2) * self.scale
            draw.text((centre, PLAY_HEADER_H / 2), self.titles[index], fill=TEXT, font=_font(13), anchor="mm")
        return native, np.asarray(band)

    def paletted(self) -> tuple[np.ndarray, list[int]]:
        """(palette indices [T, HEADER + H*s, width*s], the palette): one palette for every frame, found once at
        scale 1 (quantising the upscaled frames would cost scale^2 times more for the same colours)."""
        native, band = self._layout()
        count, height, width = native.shape[:3]
        white = np.array([[OUTLINE]], dtype=np.uint8)  # [1, 1, 3], so the outline colour is in the palette
        pixels = np.concatenate([native.reshape(-1, 1, 3), band.reshape(-1, 1, 3), white])  # [N, 1, 3]
        quantised = Image.fromarray(pixels).quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=0)
        indices = np.asarray(quantised)[:, 0]  # [N]
        split = count * height * width
        frames = upscale(indices[:split].reshape(count, height, width), self.scale, channels=False)  # [T, Hs, Ws]
        header = indices[split:-1].reshape(band.shape[:2])  # [HEADER, Ws]
        gap = max(1, PANEL_GAP // self.scale)
        for index, region in self.outlines.items():
            left = index * (self.panels[0].shape[2] + gap) * self.scale
            big = upscale(region, self.scale, channels=False)  # [T, Hs, Ws_panel]
            for t in range(count):
                edge = _outline(big[t], max(1, self.scale // 3))
                frames[t, :, left : left + edge.shape[1]][edge] = indices[-1]
        out = np.concatenate([np.broadcast_to(header, (count, *header.shape)), frames], axis=1)
        return out, quantised.getpalette() or []

    def frames(self) -> np.ndarray:
        """uint8 RGB [T, HEADER + H*s, width*s, 3], as the GIF shows them."""
        indices, palette = self.paletted()
        table = np.zeros((256, 3), dtype=np.uint8)
        colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
        table[: len(colours)] = colours
        return table[indices]


def write_gif(play: Playback, path: Path, frame_ms: int, hold_last_ms: int = 0) -> Path:
    """An animated, looping GIF of the playback (one shared palette)."""
    indices, palette = play.paletted()
    images = []
    for frame in indices:
        image = Image.fromarray(frame.astype(np.uint8), mode="P")
        image.putpalette(palette)
        images.append(image)
    durations = [frame_ms] * len(images)
    durations[-1] += hold_last_ms
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def strip_origin(row: int, column: int, cell: int) -> tuple[int, int]:
    """(top, left) pixel of filmstrip cell (row, column) whose cells are `cell` pixels square."""
    return STRIP_HEADER_H + row * (cell + STRIP_GAP), STRIP_LABEL_W + column * (cell + STRIP_GAP)


def filmstrip(
    rows: list[tuple[str, np.ndarray]],
    column_names: list[str],
    scale: int,
    outlines: dict[int, np.ndarray] | None = None,
) -> np.ndarray:
    """A grid of frames: one named row per sequence [T, H, W, 3], one column per step, upscaled by `scale`; row i
    with a region in `outlines` [T, H, W] has that region's boundary drawn."""
    outlines = outlines or {}
    count, size = rows[0][1].shape[:2]
    cell = size * scale
    height = STRIP_HEADER_H + len(rows) * (cell + STRIP_GAP)
    width = STRIP_LABEL_W + count * (cell + STRIP_GAP)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    out[:] = BACKGROUND
    for r, (_, frames) in enumerate(rows):
        shown = upscale(frames, scale) if r not in outlines else outlined(frames, outlines[r], scale)
        for c in range(count):
            top, left = strip_origin(r, c, cell)
            out[top : top + cell, left : left + cell] = shown[c]
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    font = _font(12)
    for c, name in enumerate(column_names):
        top, left = strip_origin(0, c, cell)
        draw.text((left + cell / 2, STRIP_HEADER_H / 2), name, fill=TEXT, font=font, anchor="mm")
    for r, (name, _) in enumerate(rows):
        top, _ = strip_origin(r, 0, cell)
        draw.text((6, top + cell / 2), name, fill=TEXT, font=font, anchor="lm")
    return np.asarray(image)


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] as PNG bytes (fast compression: these files live for one view)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# --- uploaded frames vs the training data ---------------------------------------------------------------------

COLOUR_BINS = 8  # per channel, for counting distinct colours
MEAN_TOLERANCE = 40.0  # RGB distance of the mean colour (0..441) that still looks like the training data
COLOUR_TOLERANCE = 3.0  # times more distinct colours than the training frames have


@dataclass(frozen=True)
class FrameStats:
    """Summary colour statistics of frames, to compare uploads with a model's training data."""

    mean: np.ndarray  # [3] mean RGB
    spread: float  # mean per-pixel standard deviation over RGB
    colours: float  # distinct colours per frame, after quantising each channel to COLOUR_BINS levels

    @classmethod
    def of(cls, frames: list[np.ndarray]) -> FrameStats:
        counts = []
        for frame in frames:
            q = frame.astype(np.int64) * COLOUR_BINS // 256  # [H, W, 3]
            counts.append(len(np.unique(q[..., 0] * COLOUR_BINS**2 + q[..., 1] * COLOUR_BINS + q[..., 2])))
        pixels = np.concatenate([f.reshape(-1, 3) for f in frames]).astype(np.float64)
        return cls(pixels.mean(axis=0), float(pixels.std(axis=0).mean()), float(np.mean(counts)))


def upload_warnings(frames: list[np.ndarray], reference: FrameStats, image_size: int) -> list[str]:
    """Ways uploaded frames [H, W, 3] differ from the training data (sizes and colour statistics); [] if none."""
    notes = []
    sizes = {f.shape[:2] for f in frames}
    if len(sizes) > 1:
        notes.append(f"the frames have different sizes ({', '.join(f'{w}x{h}' for h, w in sorted(sizes))})")
    height, width = frames[0].shape[:2]
    if height != width:
        notes.append(f"the frames are {width}x{height}, not square: they are centre-cropped to a square")
    if max(height, width) > 2 * image_size or min(height, width) < image_size:
        notes.append(
            f"the frames are {width}x{height}; the model sees {image_size}x{image_size}, so they are resized a lot"
        )
    stats = FrameStats.of(frames)
    distance = float(np.linalg.norm(stats.mean - reference.mean))
    if distance > MEAN_TOLERANCE:
        notes.append(
            f"their mean colour {hex_color(stats.mean.round().astype(int).tolist())} is far from the training "
            f"frames' {hex_color(reference.mean.round().astype(int).tolist())} (distance {distance:.0f})"
        )
    if stats.colours > COLOUR_TOLERANCE * max(1.0, reference.colours):
        notes.append(
            f"they hold about {stats.colours:.0f} distinct colours per frame where training frames hold "
            f"{reference.colours:.0f}: they look like another kind of image"
        )
    return notes
