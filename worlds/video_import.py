"""Import your own video (MP4, GIF, folders of PNG frames) as episodes of the dataset format, without truth.

A source is a single MP4/GIF file, a folder of PNG frames, or a folder holding MP4/GIF files and/or
sub-folders of PNG frames (frames sorted by file name). Each clip is centre-cropped to a square, resized
with PIL and cut into non-overlapping episodes of steps + 1 frames; a tail shorter than that is dropped.
Policy for bad clips: a clip shorter than one episode is skipped with a warning; an unreadable, truncated
or empty clip is an error naming the file (with `skip_bad`, a warning and the clip is skipped). If no clip
yields an episode, that is an error too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from flam.worlds.episode import Episode

VIDEO_SUFFIXES = (".mp4", ".gif")
FRAME_SUFFIX = ".png"
Warn = Callable[[str], None]


class VideoImportError(ValueError):
    """A source that cannot be imported; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ImportConfig:
    """How clips become episodes."""

    size: int = 64  # output frame side in pixels
    steps: int = 32  # actions per episode: episodes have steps + 1 frames
    every: int = 1  # keep every n-th source frame (subsample fast video)
    skip_bad: bool = False  # skip unreadable/truncated/empty clips with a warning instead of failing

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % 8:
            raise ValueError(f"size: expected a multiple of 8 of at least 8, got {self.size}")
        if self.steps < 1:
            raise ValueError(f"steps: expected at least 1, got {self.steps}")
        if self.every < 1:
            raise ValueError(f"every: expected at least 1, got {self.every}")


def _png_frames(folder: Path) -> list[Path]:
    """PNG files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == FRAME_SUFFIX)


def find_clips(src: Path) -> list[Path]:
    """Clips in `src`, sorted by name: MP4/GIF files and folders of PNG frames."""
    if not src.exists():
        raise VideoImportError(f"{src}: no such file or folder")
    if src.is_file():
        if src.suffix.lower() not in VIDEO_SUFFIXES:
            raise VideoImportError(f"{src}: not an MP4 or GIF file")
        return [src]
    entries = sorted(src.iterdir())
    clips = [p for p in entries if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    clips += [p for p in entries if p.is_dir() and _png_frames(p)]
    if not clips and _png_frames(src):
        return [src]
    if not clips:
        raise VideoImportError(f"{src}: holds no MP4 or GIF files and no folders of PNG frames")
    return sorted(clips)


def square_resize(image: Image.Image, size: int) -> np.ndarray:
    """uint8 [size,size,3]: centre-crop a PIL image to a square, then resize it with Lanczos filtering."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    if side != size:
        square = square.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8)  # [size,size,3]


def _read_mp4(path: Path, config: ImportConfig) -> list[np.ndarray]:
    """Frames of an MP4 through imageio's ffmpeg backend; truncation shows as fewer frames than promised."""
    import imageio.v2 as imageio

    frames, decoded = [], 0
    try:
        with imageio.get_reader(path, format="FFMPEG") as reader:
            meta = reader.get_meta_data()
            for index, frame in enumerate(reader):
                if index % config.every == 0:
                    frames.append(square_resize(Image.fromarray(frame), config.size))
                decoded = index + 1
    except Exception as error:  # imageio/ffmpeg raise OSError, RuntimeError, ... on damaged data
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise VideoImportError(f"{path}: unreadable video (ffmpeg: {lines[-1] if lines else error})") from error
    if not frames:
        raise VideoImportError(f"{path}: video has no frames")
    expected = float(meta.get("duration") or 0.0) * float(meta.get("fps") or 0.0)
    if decoded < 0.75 * expected and expected - decoded >= 3:
        raise VideoImportError(
            f"{path}: truncated or damaged video: decoded {decoded} frames of about {round(expected)} promised"
        )
    return frames


def _read_gif(path: Path, config: ImportConfig) -> list[np.ndarray]:
    """Frames of an animated GIF through PIL."""
    try:
        with Image.open(path) as image:
            return [
                square_resize(frame, config.size)
                for index, frame in enumerate(ImageSequence.Iterator(image))
                if index % config.every == 0
            ]
    except Exception as error:  # PIL raises many types (OSError, IndexError, ...) on damaged data
        raise VideoImportError(f"{path}: unreadable or truncated GIF ({error or type(error).__name__})") from error


def _read_png_folder(folder: Path, config: ImportConfig) -> list[np.ndarray]:
    """Frames from the PNG files of a folder, in name order."""
    frames = []
    for path in _png_frames(folder)[:: config.every]:
        try:
            with Image.open(path) as image:
                frames.append(square_resize(image, config.size))
        except Exception as error:  # PIL raises many types (OSError, SyntaxError, ...) on damaged data
            raise VideoImportError(f"{path}: unreadable PNG frame ({error or type(error).__name__})") from error
    return frames


def read_clip(path: Path, config: ImportConfig) -> np.ndarray:
    """uint8 [F,size,size,3]: every kept frame of one clip, cropped and resized."""
    if path.is_file() and path.stat().st_size == 0:
        raise VideoImportError(f"{path}: empty file (0 bytes)")
    if path.is_dir():
        frames = _read_png_folder(path, config)
    elif path.suffix.lower() == ".gif":
        frames = _read_gif(path, config)
    else:
        frames = _read_mp4(path, config)
    if not frames:
        raise VideoImportError(f"{path}: clip has no frames")
    return np.stack(frames)  # [F,size,size,3]


class ClipImporter:
    """Streams episodes out of the clips of a source; `report` records what each clip gave."""

    def __init__(self, src: Path, config: ImportConfig, warn: Warn) -> None:
        self.src = src
        self.config = config
        self.warn = warn
        self.clips = find_clips(src)
        self.report: dict = {
            "kind": "import",
            "videos": str(src.resolve()),
            "every": config.every,
            "clips": [],
            "skipped": [],
        }

    def _name(self, clip: Path) -> str:
        """Clip path relative to the source (the source's own name when it is the clip)."""
        return clip.name if clip == self.src else str(clip.relative_to(self.src))

    def episodes(self) -> Iterator[Episode]:
        """Episodes from every usable clip in order; raises VideoImportError if none is usable."""
        length = self.config.steps + 1
        produced = 0
        for clip in self.clips:
            try:
                frames = read_clip(clip, self.config)  # [F,H,W,3]
            except VideoImportError as error:
                if not self.config.skip_bad:
                    raise
                self.warn(f"{error}; skipped")
                self.report["skipped"].append({"clip": self._name(clip), "reason": str(error)})
                continue
            count = len(frames) // length
            if count == 0:
                reason = f"{len(frames)} frames, fewer than one episode ({length})"
                self.warn(f"{clip}: {reason}; skipped")
                self.report["skipped"].append({"clip": self._name(clip), "reason": reason})
                continue
            self.report["clips"].append(
                {"clip": self._name(clip), "frames": len(frames), "first_episode": produced, "episodes": count}
            )
            for k in range(count):
                yield Episode(frames=np.ascontiguousarray(frames[k * length : (k + 1) * length]))
            produced += count
        if produced == 0:
            raise VideoImportError(
                f"{self.src}: no usable clip: each needs at least {length} frames (--steps {self.config.steps} + 1)"
            )

    def manifest_fields(self, seed: int) -> dict:
        """Manifest fields for `write_dataset`; `source` fills in as `episodes()` runs."""
        return {
            "world": "video",
            "world_params": {"size": self.config.size, "steps": self.config.steps, "every": self.config.every},
            "seed": seed,
            "n_agents": 0,
            "n_distractors": 0,
            "entity_colors": [],
            "action_names": None,
            "source": self.report,
        }
