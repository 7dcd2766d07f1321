"""The on-disk dataset format: round trip, byte-identical writes, atomicity and clear errors on bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flam.worlds.dataset import Dataset, DatasetError, WriteConfig, split_episodes, write_dataset
from flam.worlds.episode import TRANSITION_KINDS, Episode, GroundTruth
from flam.worlds.registry import generate_episodes, make_world, manifest_fields

SMALL = WriteConfig(episodes_per_shard=5)


def _write(out: Path, seed: int = 0, n: int = 12, **kwargs: object) -> Path:
    world = make_world("multigrid", n_agents=3, steps=4, distractors=1)
    fields = manifest_fields("multigrid", world, seed, {"kind": "test"})
    return write_dataset(out, generate_episodes(world, seed, n), fields, progress=False, config=SMALL, **kwargs)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("ds") / "grid")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_frames_truth_and_manifest(dataset_dir: Path) -> None:
    ds = Dataset.open(dataset_dir)
    world = make_world("multigrid", n_agents=3, steps=4, distractors=1)
    expected = list(generate_episodes(world, 0, 12))
    assert (ds.n_episodes, ds.frames_per_episode, ds.image_size, ds.n_entities) == (12, 5, 64, 4)
    assert ds.has_ground_truth and ds.action_names == ["turn left", "turn right", "forward", "stay"]
    assert [s["n_episodes"] for s in ds.manifest["shards"]] == [5, 5, 2]
    m = ds.manifest
    assert m["format"] == "flam-dataset" and m["version"] == 1 and m["world"] == "multigrid"
    assert m["world_params"]["n_agents"] == 3 and m["seed"] == 0 and m["probe_grid"] == 8
    assert m["n_agents"] == 3 and m["n_distractors"] == 1 and len(m["entity_colors"]) == 4
    for i in (0, 4, 5, 11):
        frames = ds.frames(i)
        assert frames.dtype == np.uint8 and frames.shape == (5, 64, 64, 3)
        assert np.array_equal(frames, expected[i].frames)
        truth = ds.ground_truth(i)
        for field in ("actions", "positions", "headings", "entity_map"):
            got, want = getattr(truth, field), getattr(expected[i].truth, field)
            assert got.dtype == want.dtype and np.array_equal(got, want)
    order = [11, 0, 6, 5, 6]
    batch = ds.frames_for(order)
    assert batch.shape == (5, 5, 64, 64, 3)
    for row, episode in zip(batch, order, strict=True):
        assert np.array_equal(row, expected[episode].frames)
    assert np.array_equal(ds.episode(3).frames, expected[3].frames)


def test_splits_are_by_episode_disjoint_complete_and_deterministic(dataset_dir: Path) -> None:
    ds = Dataset.open(dataset_dir)
    train, val, test = ds.split("train"), ds.split("val"), ds.split("test")
    assert sorted(train + val + test) == list(range(12)) and len(val) == 1 and len(test) == 1
    big = split_episodes(1000, seed=0)
    assert [len(big[s]) for s in ("train", "val", "test")] == [800, 100, 100]
    assert big == split_episodes(1000, seed=0) and big != split_episodes(1000, seed=1)
    with pytest.raises(DatasetError, match="split 'dev'"):
        ds.split("dev")
    with pytest.raises(DatasetError, match="episode 12: out of range"):
        ds.frames(12)


def test_same_seed_gives_byte_identical_files_other_seed_other_data(tmp_path: Path) -> None:
    a, b, c = _write(tmp_path / "a"), _write(tmp_path / "b"), _write(tmp_path / "c", seed=1)
    files_a = _files(a)
    assert files_a == _files(b)
    assert set(files_a) == {
        "manifest.json",
        *(f"{kind}-0000{i}.{ext}" for kind, ext in (("frames", "npy"), ("truth", "npz")) for i in range(3)),
    }
    assert files_a["frames-00000.npy"] != _files(c)["frames-00000.npy"]


def test_imported_style_dataset_without_ground_truth(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    episodes = [Episode(frames=rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)) for _ in range(4)]
    fields = {
        "world": "video",
        "world_params": {},
        "seed": 0,
        "n_agents": 0,
        "n_distractors": 0,
        "entity_colors": [],
        "action_names": None,
        "source": {"kind": "test"},
    }
    write_dataset(tmp_path / "v", episodes, fields, progress=False)
    ds = Dataset.open(tmp_path / "v")
    assert not ds.has_ground_truth and ds.ground_truth(2) is None and ds.action_names is None
    assert ds.n_entities == 0 and not list((tmp_path / "v").glob("truth-*"))
    assert np.array_equal(ds.frames_for([3, 1]), np.stack([episodes[3].frames, episodes[1].frames]))


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def test_failing_or_interrupted_writer_leaves_nothing_behind(tmp_path: Path) -> None:
    world = make_world("multigrid", steps=2)
    fields = manifest_fields("multigrid", world, 0, {"kind": "test"})

    def failing(exc: BaseException):
        yield from generate_episodes(world, 0, 7)
        raise exc

    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            write_dataset(tmp_path / "out", failing(exc), fields, progress=False, config=SMALL)
        assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
    with pytest.raises(DatasetError, match="no episodes"):
        write_dataset(tmp_path / "out", iter([]), fields, progress=False)
    assert not (tmp_path / "out").exists()


def test_non_empty_out_dir_is_refused_unless_overwrite_of_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _write(out, n=2)  # an empty folder is fine
    before = _files(out)
    with pytest.raises(DatasetError, match="not empty"):
        _write(out, seed=1, n=2)
    assert _files(out) == before
    _write(out, seed=1, n=3, overwrite=True)
    assert Dataset.open(out).n_episodes == 3 and _leftovers(tmp_path) == []
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        _write(other, n=2, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        _write(tmp_path / "file", n=2)


def _broken_copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name, data in _files(src).items():
        (dst / name).write_bytes(data)
    return dst


def test_open_reports_what_is_wrong_and_where(tmp_path: Path, dataset_dir: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        Dataset.open(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"manifest\.json: missing"):
        Dataset.open(tmp_path / "empty")

    def broken(name: str, change) -> Path:
        folder = _broken_copy(dataset_dir, tmp_path / name)
        change(folder)
        return folder

    def edit_manifest(**updates: object):
        def change(folder: Path) -> None:
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest.update(updates)
            (folder / "manifest.json").write_text(json.dumps(manifest))

        return change

    def truncate(name: str, keep: float):
        def change(folder: Path) -> None:
            data = (folder / name).read_bytes()
            (folder / name).write_bytes(data[: int(len(data) * keep)])

        return change

    cases = [
        ("badjson", lambda f: (f / "manifest.json").write_text("{not json"), r"manifest\.json: unreadable"),
        ("format", edit_manifest(format="other"), "format is 'other'"),
        ("version", edit_manifest(version=99), "version 99 is not supported"),
        ("noshard", lambda f: (f / "frames-00001.npy").unlink(), r"frames-00001\.npy: missing"),
        ("short", truncate("frames-00002.npy", 0.9), r"frames-00002\.npy: truncated"),
        ("garbage", lambda f: (f / "frames-00000.npy").write_bytes(b"junk"), "not a readable .npy"),
        ("notruth", lambda f: (f / "truth-00001.npz").unlink(), r"truth-00001\.npz: missing"),
        ("cuttruth", truncate("truth-00000.npz", 0.5), r"truth-00000\.npz: unreadable or truncated"),
    ]
    for name, change, message in cases:
        with pytest.raises(DatasetError, match=message):
            Dataset.open(broken(name, change))
    assert issubclass(DatasetError, ValueError)
    with pytest.raises(DatasetError, match="not a folder"):
        Dataset.open(dataset_dir / "manifest.json")


def test_corrupt_ground_truth_is_reported_when_read(tmp_path: Path, dataset_dir: Path) -> None:
    folder = _broken_copy(dataset_dir, tmp_path / "rot")
    data = bytearray((folder / "truth-00001.npz").read_bytes())
    data[100:400] = bytes(300)  # damage compressed data, keep the zip directory intact
    (folder / "truth-00001.npz").write_bytes(bytes(data))
    ds = Dataset.open(folder)
    assert ds.ground_truth(0) is not None
    with pytest.raises(DatasetError, match=r"truth-00001\.npz: unreadable"):
        ds.ground_truth(6)


def test_ground_truth_transitions_tell_moves_from_turns() -> None:
    # Three frames of two entities on 8-pixel cells: entity 0 moves a cell (within-cell jitter is no move) then turns;
    # entity 1 stays put, then moves with a new heading (a move wins over the turn).
    positions = np.array([[[4, 4], [20, 20]], [[4, 12], [21, 19]], [[5, 13], [28, 20]]], dtype=np.float32)
    headings = np.array([[0, 1], [0, 1], [1, 2]], dtype=np.int8)
    empty_map = np.zeros((3, 8, 8), np.uint8)
    truth = GroundTruth(np.zeros((2, 2), np.int16), positions, headings, empty_map)
    kinds = [[TRANSITION_KINDS[k] for k in row] for row in truth.transitions(cell=8)]
    assert kinds == [["moved", "neither"], ["turned", "moved"]]
