"""The one on-disk dataset format: a folder with `manifest.json`, uint8 frame shards and ground-truth shards.

Layout of a dataset folder:
- `manifest.json`: format name and version, the world and all its parameters, seed, sizes, entity colours,
  action names, the train/val/test split by episode, the shard list and where the data came from.
- `frames-00000.npy`: uint8 [E_shard,T,H,W,3], read through a memory map.
- `truth-00000.npz` (only where ground truth exists): compressed actions [E,T-1,N], positions [E,T,N,2],
  headings [E,T,N] and entity_map [E,T,H,W] (see `GroundTruth`).
Writes go to a hidden sibling folder that is renamed into place at the end, so a folder with a manifest is
always complete. The same episodes and fields give byte-identical files (no timestamps anywhere).
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm import tqdm

from flam.worlds.episode import Episode, GroundTruth

FORMAT_NAME = "flam-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLIT_NAMES = ("train", "val", "test")
TRUTH_FIELDS = ("actions", "positions", "headings", "entity_map")
CALLER_FIELDS = (
    "world",
    "world_params",
    "seed",
    "n_agents",
    "n_distractors",
    "entity_colors",
    "action_names",
    "source",
)


class DatasetError(ValueError):
    """A dataset folder that cannot be read or written: the message names the file and what is wrong."""


@dataclass(frozen=True)
class WriteConfig:
    """How episodes are laid out on disk and split."""

    episodes_per_shard: int = 200  # at most; fewer for large frames so one shard stays under shard_bytes
    shard_bytes: int = 256 * 2**20  # frame bytes per shard at most (unless one episode alone is larger)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    probe_grid: int = 8  # cells per side used to discretise positions for probes


def split_episodes(n_episodes: int, seed: int, config: WriteConfig = WriteConfig()) -> dict[str, list[int]]:
    """Deterministic train/val/test split by episode (never by frame); val and test get >= 1 when n >= 3."""
    order = np.random.default_rng([seed, 0x5EED]).permutation(n_episodes)
    n_val = max(1, round(n_episodes * config.val_fraction)) if n_episodes >= 3 else 0
    n_test = max(1, round(n_episodes * config.test_fraction)) if n_episodes >= 2 else 0
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {name: sorted(int(e) for e in part) for name, part in zip(SPLIT_NAMES, (train, val, test), strict=True)}


def _created_by() -> str:
    """Package name and version that wrote the dataset."""
    try:
        return f"flam-studio {metadata.version('flam-studio')}"
    except metadata.PackageNotFoundError:
        return "flam-studio (not installed)"


def _check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a target that is a file, a non-empty folder without overwrite, or a non-dataset folder."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"{out}: folder is not empty (pass --overwrite to replace a dataset there)")
        if not (out / MANIFEST).is_file():
            raise DatasetError(f"{out}: folder is not empty and holds no {MANIFEST}; refusing to overwrite it")


def _write_shard(folder: Path, index: int, batch: list[Episode]) -> dict:
    """Write one frames shard (and its truth shard) and return its manifest entry."""
    frames_name = f"frames-{index:05d}.npy"
    np.save(folder / frames_name, np.stack([e.frames for e in batch]))  # [E,T,H,W,3]
    truth_name = None
    if batch[0].truth is not None:
        truth_name = f"truth-{index:05d}.npz"
        arrays = {f: np.stack([getattr(e.truth, f) for e in batch]) for f in TRUTH_FIELDS}  # [E,...] each
        with open(folder / truth_name, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return {"frames": frames_name, "truth": truth_name, "n_episodes": len(batch)}


def write_dataset(
    out_dir: str | os.PathLike,
    episodes: Iterable[Episode],
    manifest_fields: dict,
    *,
    n_episodes: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    config: WriteConfig = WriteConfig(),
) -> Path:
    """Write episodes into a new dataset folder atomically and return its path.

    `manifest_fields` must hold CALLER_FIELDS; the writer adds sizes, splits (from `seed`), shards and version.
    It reads them after the last episode, so an episode generator may fill in its `source` record as it runs.
    `n_episodes` only sizes the progress bar. An existing non-empty `out_dir` is an error unless `overwrite`
    is set and it holds a dataset. Any error (also from the episode iterator) leaves no output folder behind.
    """
    missing = [k for k in CALLER_FIELDS if k not in manifest_fields]
    if missing:
        raise ValueError(f"write_dataset: manifest_fields lacks {missing}")
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        shards, first, count, batch = [], None, 0, []
        for episode in tqdm(episodes, total=n_episodes, desc=f"writing {out.name}", unit="ep", disable=not progress):
            episode.check()
            if first is None:
                first = episode
                per_shard = max(1, min(config.episodes_per_shard, config.shard_bytes // episode.frames.nbytes))
            elif episode.frames.shape != first.frames.shape or (episode.truth is None) != (first.truth is None):
                raise ValueError(
                    f"episode {count}: frames {list(episode.frames.shape)} / ground truth "
                    f"{episode.truth is not None} differ from episode 0"
                )
            batch.append(episode)
            count += 1
            if len(batch) == per_shard:
                shards.append(_write_shard(tmp, len(shards), batch))
                batch = []
        if first is None:
            raise DatasetError(f"{out}: no episodes to write")
        if batch:
            shards.append(_write_shard(tmp, len(shards), batch))
        n_entities = manifest_fields["n_agents"] + manifest_fields["n_distractors"]
        if first.truth is not None and first.truth.n_entities != n_entities:
            raise ValueError(f"ground truth has {first.truth.n_entities} entities, manifest says {n_entities}")
        manifest = _manifest(manifest_fields, first, count, shards, config)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _manifest(fields: dict, first: Episode, count: int, shards: list[dict], config: WriteConfig) -> dict:
    """The manifest in a fixed key order: format, what the data is, its layout, where it came from."""
    steps1, height = first.frames.shape[:2]
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "world": fields["world"],
        "world_params": fields["world_params"],
        "seed": fields["seed"],
        "image_size": int(height),
        "steps": int(steps1) - 1,
        "frames_per_episode": int(steps1),
        "n_episodes": count,
        "n_agents": fields["n_agents"],
        "n_distractors": fields["n_distractors"],
        "entity_colors": fields["entity_colors"],
        "action_names": fields["action_names"],
        "probe_grid": config.probe_grid,
        "has_ground_truth": first.truth is not None,
        "splits": split_episodes(count, fields["seed"], config),
        "shards": shards,
        "source": fields["source"],
        "created_by": _created_by(),
    }


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished temporary folder to `out`, replacing an empty folder or an old dataset."""
    if not out.exists():
        tmp.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old)


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a .npy file, from its header alone."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f".npy format version {version} is not supported")
        return shape, dtype, handle.tell()


class Dataset:
    """Read access to a dataset folder: frames through memory maps, ground truth decompressed per shard."""

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = path
        self.manifest = manifest
        self._starts = list(np.cumsum([0] + [s["n_episodes"] for s in manifest["shards"]])[:-1])
        self._frames: dict[int, np.ndarray] = {}
        self._truth: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()  # the shard caches are shared by threads of a server

    @classmethod
    def open(cls, path: str | os.PathLike) -> Dataset:
        """Open and validate a dataset folder; raise DatasetError naming the file for anything wrong."""
        folder = Path(path)
        if not folder.exists():
            raise DatasetError(f"{folder}: no such folder")
        if not folder.is_dir():
            raise DatasetError(f"{folder}: not a folder (expected a dataset folder with {MANIFEST})")
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise DatasetError(f"{manifest_path}: missing, so {folder} is not a FLAM dataset folder")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DatasetError(f"{manifest_path}: unreadable ({error})") from error
        _check_manifest(manifest_path, manifest)
        for shard in manifest["shards"]:
            _check_shard(folder, shard, manifest)
        return cls(folder, manifest)

    @property
    def image_size(self) -> int:
        """Frame height and width in pixels."""
        return int(self.manifest["image_size"])

    @property
    def frames_per_episode(self) -> int:
        """T: frames in every episode (steps + 1)."""
        return int(self.manifest["frames_per_episode"])

    @property
    def n_episodes(self) -> int:
        """Number of episodes in all splits together."""
        return int(self.manifest["n_episodes"])

    @property
    def has_ground_truth(self) -> bool:
        """True for built-in worlds, False for imported video."""
        return bool(self.manifest["has_ground_truth"])

    @property
    def n_entities(self) -> int:
        """N: agents plus distractors (0 for imported video)."""
        return int(self.manifest["n_agents"]) + int(self.manifest["n_distractors"])

    @property
    def action_names(self) -> list[str] | None:
        """Names of the ground-truth action codes, or None where there are no actions."""
        names = self.manifest["action_names"]
        return None if names is None else list(names)

    def split(self, name: str) -> list[int]:
        """Episode indices of split `name` (train, val or test)."""
        if name not in self.manifest["splits"]:
            raise DatasetError(f"split {name!r}: expected one of {', '.join(self.manifest['splits'])}")
        return list(self.manifest["splits"][name])

    def _locate(self, episode: int) -> tuple[int, int]:
        """(shard index, index within the shard) of an episode."""
        if not 0 <= episode < self.n_episodes:
            raise DatasetError(f"episode {episode}: out of range, {self.path} has episodes 0..{self.n_episodes - 1}")
        shard = bisect.bisect_right(self._starts, episode) - 1
        return shard, episode - int(self._starts[shard])

    def _shard_frames(self, shard: int) -> np.ndarray:
        """Memory map of one frames shard, uint8 [E_shard,T,H,W,3]."""
        with self._lock:
            if shard not in self._frames:
                path = self.path / self.manifest["shards"][shard]["frames"]
                self._frames[shard] = np.load(path, mmap_mode="r")
            return self._frames[shard]

    def frames(self, episode: int) -> np.ndarray:
        """uint8 [T,H,W,3]: the frames of one episode, as an in-memory array."""
        shard, local = self._locate(episode)
        return np.array(self._shard_frames(shard)[local])  # [T,H,W,3]

    def frames_for(self, episodes: list[int]) -> np.ndarray:
        """uint8 [E,T,H,W,3]: frames of many episodes, read shard by shard in file order."""
        size, steps1 = self.image_size, self.frames_per_episode
        out = np.empty((len(episodes), steps1, size, size, 3), np.uint8)  # [E,T,H,W,3]
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for slot, episode in enumerate(episodes):
            shard, local = self._locate(int(episode))
            by_shard.setdefault(shard, []).append((local, slot))
        for shard, pairs in sorted(by_shard.items()):
            pairs.sort()
            local = np.array([p[0] for p in pairs])
            out[[p[1] for p in pairs]] = self._shard_frames(shard)[local]  # [E_shard,T,H,W,3]
        return out

    def _shard_truth(self, shard: int) -> dict[str, np.ndarray]:
        """Decompressed ground-truth arrays of one shard; keeps the two most recently used shards."""
        with self._lock:
            if shard in self._truth:
                self._truth.move_to_end(shard)
                return self._truth[shard]
            path = self.path / self.manifest["shards"][shard]["truth"]
            try:
                with np.load(path) as archive:
                    arrays = {name: archive[name] for name in TRUTH_FIELDS}
            except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
                raise DatasetError(f"{path}: unreadable or truncated ground-truth shard ({error})") from error
            self._truth[shard] = arrays
            if len(self._truth) > 2:
                self._truth.popitem(last=False)
            return arrays

    def ground_truth(self, episode: int) -> GroundTruth | None:
        """Ground truth of one episode, or None for a dataset without it (imported video)."""
        shard, local = self._locate(episode)
        if not self.has_ground_truth:
            return None
        arrays = self._shard_truth(shard)
        return GroundTruth(**{name: np.array(arrays[name][local]) for name in TRUTH_FIELDS})

    def episode(self, episode: int) -> Episode:
        """Frames and ground truth of one episode together."""
        return Episode(frames=self.frames(episode), truth=self.ground_truth(episode))


def write_subset(dataset: Dataset, episodes: list[int], out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Copy some episodes of a dataset (frames and ground truth) into a new dataset folder.

    Used to bundle a few held-out episodes with a trained model; the source record names where they came from.
    """
    fields = {key: dataset.manifest[key] for key in CALLER_FIELDS if key != "source"}
    fields["source"] = {"subset_of": dataset.manifest["source"], "episodes": [int(e) for e in episodes]}
    return write_dataset(
        out_dir,
        (dataset.episode(e) for e in episodes),
        fields,
        n_episodes=len(episodes),
        overwrite=overwrite,
        progress=False,
    )


def _check_manifest(path: Path, manifest: object) -> None:
    """Raise DatasetError unless the manifest is this format and version and has every field."""
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    if manifest.get("format") != FORMAT_NAME:
        raise DatasetError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: format version {manifest.get('version')!r} is not supported "
            f"(this FLAM Studio reads version {FORMAT_VERSION})"
        )
    required = (
        "image_size",
        "frames_per_episode",
        "n_episodes",
        "n_agents",
        "n_distractors",
        "action_names",
        "has_ground_truth",
        "splits",
        "shards",
    )
    missing = [key for key in required if key not in manifest]
    if missing:
        raise DatasetError(f"{path}: missing field(s) {', '.join(missing)}")
    if sum(s.get("n_episodes", 0) for s in manifest["shards"]) != manifest["n_episodes"]:
        raise DatasetError(f"{path}: shards hold a different number of episodes than n_episodes")
    for name, episodes in manifest["splits"].items():
        if any(not 0 <= e < manifest["n_episodes"] for e in episodes):
            raise DatasetError(f"{path}: split {name!r} names episodes outside 0..{manifest['n_episodes'] - 1}")


def _check_shard(folder: Path, shard: dict, manifest: dict) -> None:
    """Raise DatasetError for a missing, truncated or mis-shaped shard (headers only; data is read lazily)."""
    frames = folder / shard["frames"]
    if not frames.is_file():
        raise DatasetError(f"{frames}: missing frames shard")
    size, steps1 = manifest["image_size"], manifest["frames_per_episode"]
    expected = (shard["n_episodes"], steps1, size, size, 3)
    try:
        shape, dtype, offset = _npy_layout(frames)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{frames}: not a readable .npy file ({error})") from error
    if tuple(shape) != expected or dtype != np.uint8:
        raise DatasetError(f"{frames}: holds {dtype} {list(shape)}, expected uint8 {list(expected)}")
    needed = offset + int(np.prod(expected))
    actual = frames.stat().st_size
    if actual < needed:
        raise DatasetError(f"{frames}: truncated ({actual} of {needed} bytes)")
    if manifest["has_ground_truth"]:
        if not shard.get("truth"):
            raise DatasetError(f"{folder / MANIFEST}: shard {shard['frames']} lists no ground-truth file")
        truth = folder / shard["truth"]
        if not truth.is_file():
            raise DatasetError(f"{truth}: missing ground-truth shard")
        try:
            with zipfile.ZipFile(truth) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile) as error:
            raise DatasetError(f"{truth}: unreadable or truncated ground-truth shard ({error})") from error
        absent = [f for f in TRUTH_FIELDS if f"{f}.npy" not in names]
        if absent:
            raise DatasetError(f"{truth}: lacks {', '.join(absent)}")
