"""`flam data`: generate, import (MP4, GIF, PNG folders), show and info, and clear exit-2 errors on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image, ImageSequence

from flam.main import main
from flam.worlds.dataset import Dataset

FLAM = Path(sys.executable).parent / "flam"
GREEN, RED = (40, 200, 60), (220, 30, 30)


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_line(err: str) -> str:
    """The single error line (progress-bar output may precede it on stderr)."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def _no_leftovers(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def _framed(height: int, width: int, shade: int) -> np.ndarray:
    """A frame whose centre square is green and whose left/right margins are red (tests the centre crop)."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = RED
    left = (width - height) // 2
    frame[:, left : left + height] = (GREEN[0], GREEN[1], shade % 256)
    return frame


def _write_mp4(path: Path, count: int, faststart: bool = False) -> None:
    frames = np.stack([_framed(48, 80, 60 + 4 * t) for t in range(count)])  # [F,48,80,3]
    params = ["-movflags", "+faststart"] if faststart else None
    iio.imwrite(path, frames, plugin="FFMPEG", fps=10, macro_block_size=1, output_params=params)


def _write_gif(path: Path, count: int) -> None:
    images = [Image.fromarray(_framed(30, 50, 60 + 5 * t)) for t in range(count)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)


def _write_pngs(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for t in range(count):
        Image.fromarray(_framed(40, 60, 60 + 3 * t)).save(folder / f"frame{t:03d}.png")


def test_generate_info_show_in_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "grid"
    argv = ["data", "generate", "--world", "multigrid", "--agents", "3", "--episodes", "10", "--steps", "6"]
    code, stdout, _ = _run([*argv, "--seed", "0", "--out", str(out), "--correlated", "2"], capsys)
    assert code == 0 and "wrote 10 episodes" in stdout
    ds = Dataset.open(out)
    assert (ds.n_episodes, ds.frames_per_episode, ds.n_entities) == (10, 7, 3)
    assert ds.manifest["world_params"]["correlated"] == 2
    assert ds.manifest["source"]["command"].startswith("flam data generate --world multigrid --agents 3")
    truth = ds.ground_truth(4)
    assert np.array_equal(truth.actions[:, 0], truth.actions[:, 1])

    code, stdout, _ = _run(["data", "info", str(out)], capsys)
    assert code == 0 and "multigrid" in stdout and "train 8 / val 1 / test 1" in stdout

    sheet = tmp_path / "sheet.png"
    code, _, _ = _run(["data", "show", str(out), "--split", "test", "--out", str(sheet)], capsys)
    assert code == 0
    image = np.asarray(Image.open(sheet).convert("RGB"))
    assert image.shape[0] > 128 and image.shape[1] > 7 * 128  # one row of 7 frames, scaled to 128 px
    for color in ds.manifest["entity_colors"]:
        assert np.all(image == color, axis=-1).sum() > 7 * 50, "each agent is drawn in every frame"

    gif = tmp_path / "episode.gif"
    code, _, _ = _run(["data", "show", str(out), "--episode", "2", "--out", str(gif)], capsys)
    assert code == 0
    with Image.open(gif) as animation:
        assert sum(1 for _ in ImageSequence.Iterator(animation)) == 7


def test_sprites_with_distractors_and_heldout_palette(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sprites"
    argv = ["data", "generate", "--world", "sprites", "--agents", "2", "--episodes", "3", "--steps", "4"]
    code, _, _ = _run([*argv, "--distractors", "2", "--palette", "heldout", "--size", "32", "--out", str(out)], capsys)
    assert code == 0
    ds = Dataset.open(out)
    assert ds.image_size == 32 and ds.n_entities == 4
    assert ds.action_names == ["none", "up", "down", "left", "right"]
    assert np.all(ds.ground_truth(0).actions[:, 2:] == -1)


def test_import_mp4_gif_and_png_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "clips"
    src.mkdir()
    _write_mp4(src / "a.mp4", 25)  # 3 episodes of 8 frames, tail of 1 dropped
    _write_gif(src / "b.gif", 16)  # 2 episodes
    _write_pngs(src / "c_pngs", 8)  # 1 episode
    _write_gif(src / "d_short.gif", 5)  # shorter than one episode: skipped with a warning
    out = tmp_path / "imported"
    code, stdout, err = _run(["data", "import", "--videos", str(src), "--out", str(out), "--steps", "7"], capsys)
    assert code == 0, err
    assert "wrote 6 episodes from 3 clip(s)" in stdout
    assert "warning" in err and "d_short.gif" in err and "5 frames" in err
    ds = Dataset.open(out)
    assert (ds.n_episodes, ds.frames_per_episode, ds.image_size) == (6, 8, 64)
    assert not ds.has_ground_truth and ds.ground_truth(0) is None and ds.action_names is None
    clips = ds.manifest["source"]["clips"]
    assert [(c["clip"], c["episodes"]) for c in clips] == [("a.mp4", 3), ("b.gif", 2), ("c_pngs", 1)]
    assert ds.manifest["source"]["skipped"][0]["clip"] == "d_short.gif"
    frames = ds.frames_for(list(range(6))).astype(int)  # [E,T,H,W,3]
    inner = frames[:, :, 4:-4, 4:-4]
    assert np.abs(inner[..., 0] - GREEN[0]).max() < 40, "the centre crop keeps only the green square"
    assert np.abs(inner[..., 1] - GREEN[1]).max() < 40
    blue = frames[3:5, :, 32, 32, 2]  # the GIF's blue channel ramps 5 per frame
    assert np.all(np.diff(blue, axis=1) > 0)

    single = tmp_path / "single"
    code, stdout, _ = _run(
        ["data", "import", "--videos", str(src / "c_pngs"), "--out", str(single), "--steps", "3", "--size", "16"],
        capsys,
    )
    assert code == 0 and Dataset.open(single).n_episodes == 2 and Dataset.open(single).image_size == 16


def _expect_error(argv: list[str], capsys: pytest.CaptureFixture, *fragments: str) -> str:
    code, _, err = _run(argv, capsys)
    assert code == 2
    line = _error_line(err)
    for fragment in fragments:
        assert fragment in line, line
    return line


def test_bad_import_inputs_exit_2_with_a_clear_line_and_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"

    def imp(src: Path, *extra: str) -> list[str]:
        return ["data", "import", "--videos", str(src), "--out", str(out), "--steps", "7", *extra]

    _expect_error(imp(tmp_path / "missing"), capsys, "missing", "no such file or folder")
    _no_leftovers(tmp_path, "out")

    good = tmp_path / "good"
    good.mkdir()
    _write_gif(good / "fine.gif", 16)

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "noise.mp4").write_bytes(b"this is not a video" * 50)
    _expect_error(imp(garbage), capsys, "noise.mp4", "unreadable video")
    _no_leftovers(tmp_path, "out")

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    _write_mp4(truncated / "whole.mp4", 24)
    data = (truncated / "whole.mp4").read_bytes()
    (truncated / "whole.mp4").write_bytes(data[: len(data) // 2])
    _write_gif(truncated / "zz_fine.gif", 16)  # a good clip after the bad one: output must still not appear
    _expect_error(imp(truncated), capsys, "whole.mp4", "unreadable video")
    _no_leftovers(tmp_path, "out")

    streamable = tmp_path / "streamable"  # index first: ffmpeg decodes the start and stops early
    streamable.mkdir()
    _write_mp4(streamable / "cut.mp4", 60, faststart=True)
    data = (streamable / "cut.mp4").read_bytes()
    (streamable / "cut.mp4").write_bytes(data[: len(data) // 2])
    _expect_error(imp(streamable), capsys, "cut.mp4", "truncated or damaged video")
    _no_leftovers(tmp_path, "out")

    cut_gif = tmp_path / "cutgif"
    cut_gif.mkdir()
    data = (good / "fine.gif").read_bytes()
    (cut_gif / "cut.gif").write_bytes(data[: len(data) // 2])
    _expect_error(imp(cut_gif), capsys, "cut.gif", "truncated")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "zero.mp4").write_bytes(b"")
    _expect_error(imp(empty), capsys, "zero.mp4", "empty file")
    _no_leftovers(tmp_path, "out")

    (empty / "ok.gif").write_bytes((good / "fine.gif").read_bytes())
    code, _, err = _run(imp(empty, "--skip-bad"), capsys)
    assert code == 0 and "zero.mp4" in err and Dataset.open(out).n_episodes == 2
    assert Dataset.open(out).manifest["source"]["skipped"][0]["clip"] == "zero.mp4"

    short = tmp_path / "short"
    _write_pngs(short / "clip", 3)
    _expect_error(imp(short, "--overwrite"), capsys, "no usable clip", "at least 8 frames")
    assert Dataset.open(out).n_episodes == 2, "a failed overwrite keeps the old dataset"

    nothing = tmp_path / "nothing"
    (nothing / "sub").mkdir(parents=True)
    _expect_error(imp(nothing), capsys, "nothing", "no MP4 or GIF files")
    _expect_error(imp(good, "--size", "30"), capsys, "--size")


def test_bad_generate_and_show_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gen = ["data", "generate", "--episodes", "2", "--steps", "2"]
    _expect_error([*gen, "--agents", "9", "--out", str(tmp_path / "x")], capsys, "--agents", "1..8")
    _expect_error([*gen, "--correlated", "7", "--out", str(tmp_path / "x")], capsys, "--correlated")
    _expect_error([*gen, "--episodes", "0", "--out", str(tmp_path / "x")], capsys, "--episodes")
    _no_leftovers(tmp_path, "x")
    with pytest.raises(SystemExit) as exit_info:
        main([*gen, "--out", str(tmp_path / "x"), "--speed", "3"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --speed" in capsys.readouterr().err

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    _expect_error([*gen, "--out", str(busy)], capsys, str(busy), "not empty")
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]

    _expect_error(["data", "info", str(tmp_path / "nope")], capsys, "nope", "no such folder")
    _expect_error(["data", "show", str(busy), "--out", str(tmp_path / "s.png")], capsys, "manifest.json: missing")
    data = tmp_path / "data"
    assert main([*gen, "--out", str(data)]) == 0
    _expect_error(["data", "show", str(data), "--out", str(tmp_path / "s.jpg")], capsys, ".png", ".gif")
    _expect_error(
        ["data", "show", str(data), "--episode", "5", "--out", str(tmp_path / "s.png")],
        capsys,
        "episode 5: out of range",
    )
    assert not (tmp_path / "s.png").exists()


def test_console_script_runs_as_a_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "sub"
    done = subprocess.run(
        [str(FLAM), "data", "generate", "--episodes", "3", "--steps", "3", "--seed", "5", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Dataset.open(out).n_episodes == 3
    again = subprocess.run(
        [str(FLAM), "data", "generate", "--episodes", "3", "--steps", "3", "--seed", "5", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
    wrong = subprocess.run(
        [str(FLAM), "data", "generate", "--out", str(tmp_path / "w"), "--bogus"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode == 2 and "unrecognized arguments: --bogus" in wrong.stderr
    assert not (tmp_path / "w").exists()
