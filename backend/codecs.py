"""Images in and out of the API: base64 PNG frames from clients, PNG frames and GIF/MP4 videos back to them.

Uploaded frames are checked before anything is decoded: the bytes must be a PNG whose header declares at most
`max_pixels` pixels (a tiny file can declare a huge image: a decompression bomb), and a truncated or corrupt
file is refused. Frames of another size are centre-cropped to a square and resized to the model's image size
(Lanczos); the recipe then carries the resized frames, so posting it back needs no resizing. Every encoder here
is deterministic: the same frames give the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct
import tempfile
import zlib

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URL_PREFIX = "data:image/png;base64,"
PNG_COMPRESS_LEVEL = 1  # fast; the files are small anyway
VIDEO_FORMATS = {"gif": "image/gif", "mp4": "video/mp4"}


class CodecError(ValueError):
    """An uploaded image that cannot be used, with what to fix."""


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) declared by a PNG's IHDR chunk, read without decoding anything."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise CodecError("not a PNG image (send the base64 of a .png file)")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def decode_png(text: str, image_size: int, max_pixels: int) -> np.ndarray:
    """A base64 PNG (optionally a data: URL) -> uint8 [H, W, 3] at image_size x image_size."""
    if text.startswith(DATA_URL_PREFIX):
        text = text[len(DATA_URL_PREFIX) :]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CodecError("not valid base64 (send the base64 of a .png file)") from None
    width, height = png_size(data)
    if width < 1 or height < 1:
        raise CodecError(f"the PNG declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise CodecError(
            f"the PNG declares {width}x{height} = {width * height} pixels; this server accepts at most {max_pixels}"
            f" (send frames of {image_size}x{image_size})"
        )
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError):
        raise CodecError("truncated or corrupt PNG (the file could not be decoded)") from None
    return _fit(rgb, image_size)


def _fit(image: Image.Image, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size x size: uint8 [H, W, 3]."""
    width, height = image.size
    if (width, height) != (size, size):
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).copy()


def encode_png(frame: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (no timestamps or text chunks: the same frame gives the same bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    """Bytes -> base64 text."""
    return base64.b64encode(data).decode("ascii")


def encode_png_b64(frame: np.ndarray) -> str:
    """uint8 [H, W, 3] -> base64 PNG."""
    return b64(encode_png(frame))


def encode_video(frames: np.ndarray, fmt: str, fps: int) -> bytes:
    """uint8 [T, H, W, 3] -> one animated GIF or H.264 MP4 file."""
    if fmt == "gif":
        return _encode_gif(frames, fps)
    if fmt == "mp4":
        return _encode_mp4(frames, fps)
    raise ValueError(f"unknown video format {fmt!r}: use one of {sorted(VIDEO_FORMATS)}")


def _encode_gif(frames: np.ndarray, fps: int) -> bytes:
    """Looping GIF; every frame gets its own palette (the frames have few colours)."""
    images = [Image.fromarray(f, "RGB") for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return buffer.getvalue()


def _encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """H.264 MP4 through imageio-ffmpeg, single-threaded and bit-exact so the same frames give the same bytes."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    handle, path = tempfile.mkstemp(suffix=".mp4", prefix="flam-")
    os.close(handle)
    try:
        writer = imageio_ffmpeg.write_frames(
            path,
            (width, height),
            fps=fps,
            codec="libx264",
            quality=8,
            macro_block_size=8,
            ffmpeg_log_level="error",
            output_params=["-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1"],
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        with open(path, "rb") as stream:
            return stream.read()
    finally:
        os.unlink(path)
