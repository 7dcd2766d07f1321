"""`flam data`: generate built-in world datasets, import your own video, and look at or summarise a dataset."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flam.main import CliError

IMPORT_POLICY = (
    "Clips: MP4 and GIF files in SRC and sub-folders of PNG frames (sorted by name); SRC may also be one file "
    "or one folder of PNGs. Each clip is centre-cropped to a square, resized and cut into episodes of "
    "--steps + 1 frames; a shorter tail is dropped. A clip shorter than one episode is skipped with a warning. "
    "An unreadable, truncated or empty clip stops the import with an error naming the file, unless --skip-bad "
    "is given (then it is skipped with a warning). If no clip is usable, the import fails and writes nothing."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `flam data` and its actions to the top-level parser."""
    parser = subparsers.add_parser(
        "data",
        help="generate, import, show and describe datasets",
        description="Datasets: built-in multi-entity worlds with ground truth, or your own video without it.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    generate = actions.add_parser(
        "generate",
        help="simulate a built-in world into a dataset folder",
        description="Simulate episodes of a built-in world (deterministic by --seed) and write a dataset folder "
        "with frames, ground truth and a train/val/test split by episode.",
    )
    generate.add_argument("--world", choices=("multigrid", "sprites"), default="multigrid")
    generate.add_argument("--agents", type=int, default=4, help="entities steered by actions, 1-8 (default 4)")
    generate.add_argument("--episodes", type=int, default=1000, help="number of episodes (default 1000)")
    generate.add_argument("--steps", type=int, default=32, help="actions per episode; frames = steps + 1")
    generate.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    generate.add_argument("--out", required=True, type=Path, metavar="DIR", help="dataset folder to create")
    generate.add_argument("--size", type=int, default=64, help="frame side in pixels, a multiple of 8")
    generate.add_argument(
        "--correlated", type=int, default=0, help="the first N agents always take agent 0's action (0 = off)"
    )
    generate.add_argument("--distractors", type=int, default=0, help="moving objects no action controls")
    generate.add_argument(
        "--palette", choices=("default", "heldout"), default="default", help="agent colours; heldout for tests"
    )
    generate.add_argument("--persistence", type=float, default=0.7, help="probability an agent repeats its last action")
    generate.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    generate.set_defaults(run=run_generate)

    imp = actions.add_parser(
        "import",
        help="turn MP4 / GIF / PNG-folder video into a dataset folder (no ground truth)",
        description="Import your own video into the dataset format. " + IMPORT_POLICY,
    )
    imp.add_argument("--videos", required=True, type=Path, metavar="SRC", help="folder of clips (or one clip)")
    imp.add_argument("--out", required=True, type=Path, metavar="DIR", help="dataset folder to create")
    imp.add_argument("--size", type=int, default=64, help="frame side in pixels, a multiple of 8 (default 64)")
    imp.add_argument("--steps", type=int, default=32, help="actions per episode; frames = steps + 1")
    imp.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split")
    imp.add_argument("--every", type=int, default=1, help="keep every N-th source frame (default 1: all)")
    imp.add_argument("--skip-bad", action="store_true", help="skip unreadable clips with a warning")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    imp.set_defaults(run=run_import)

    show = actions.add_parser(
        "show",
        help="draw an episode as a contact-sheet PNG or an animated GIF",
        description="Draw one episode with its ground-truth masks outlined and actions printed (where they "
        "exist). --episode is the dataset-wide index; --split alone picks that split's first episode.",
    )
    show.add_argument("dataset", type=Path, help="dataset folder")
    show.add_argument("--episode", type=int, default=None, help="episode index (default: first of --split)")
    show.add_argument("--split", choices=("train", "val", "test"), default=None, help="split to pick from")
    show.add_argument("--out", required=True, type=Path, metavar="FILE", help="FILE.png (contact sheet) or FILE.gif")
    show.add_argument("--frames", type=int, default=0, help="show only the first N frames (default: all)")
    show.set_defaults(run=run_show)

    subset = actions.add_parser(
        "subset",
        help="copy some episodes of a dataset into a new dataset folder",
        description="Copy the first --count episodes of a split (frames and ground truth) into a new dataset, "
        "e.g. the held-out sample episodes bundled with a trained model set.",
    )
    subset.add_argument("dataset", type=Path, help="source dataset folder")
    subset.add_argument("--split", choices=("train", "val", "test"), default="test", help="split to copy from")
    subset.add_argument("--count", type=int, default=16, help="number of episodes (default 16)")
    subset.add_argument("--out", required=True, type=Path, metavar="DIR", help="new dataset folder")
    subset.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    subset.set_defaults(run=run_subset)

    info = actions.add_parser("info", help="summarise a dataset's manifest", description="Summarise a dataset.")
    info.add_argument("dataset", type=Path, help="dataset folder")
    info.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    info.set_defaults(run=run_info)


def _warn(message: str) -> None:
    """Print a warning without breaking a progress bar."""
    from tqdm import tqdm

    tqdm.write(f"flam data: warning: {message}", file=sys.stderr)


def run_generate(args: argparse.Namespace) -> int:
    """Simulate a built-in world and write the dataset."""
    from flam.worlds.dataset import DatasetError, write_dataset
    from flam.worlds.registry import generate_episodes, make_world, manifest_fields

    if args.episodes < 1:
        raise CliError(f"--episodes: expected at least 1, got {args.episodes}")
    if args.seed < 0:
        raise CliError(f"--seed: expected a non-negative integer, got {args.seed}")
    try:
        world = make_world(
            args.world,
            n_agents=args.agents,
            steps=args.steps,
            image_size=args.size,
            persistence=args.persistence,
            correlated=args.correlated,
            distractors=args.distractors,
            palette=args.palette,
        )
    except ValueError as error:
        raise CliError(f"--{error}") from error
    command = (
        f"flam data generate --world {args.world} --agents {args.agents} --episodes {args.episodes} "
        f"--steps {args.steps} --seed {args.seed} --size {args.size} --correlated {args.correlated} "
        f"--distractors {args.distractors} --palette {args.palette} --persistence {args.persistence}"
    )
    fields = manifest_fields(args.world, world, args.seed, {"kind": "generate", "command": command})
    try:
        out = write_dataset(
            args.out,
            generate_episodes(world, args.seed, args.episodes),
            fields,
            n_episodes=args.episodes,
            overwrite=args.overwrite,
        )
    except DatasetError as error:
        raise CliError(str(error)) from error
    except OSError as error:
        raise CliError(f"{args.out}: cannot write the dataset ({error})") from error
    print(f"wrote {args.episodes} episodes of {args.world} to {out}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Import clips into the dataset format."""
    from flam.worlds.dataset import DatasetError, write_dataset
    from flam.worlds.video_import import ClipImporter, ImportConfig, VideoImportError

    if args.seed < 0:
        raise CliError(f"--seed: expected a non-negative integer, got {args.seed}")
    try:
        config = ImportConfig(size=args.size, steps=args.steps, every=args.every, skip_bad=args.skip_bad)
    except ValueError as error:
        raise CliError(f"--{error}") from error
    try:
        importer = ClipImporter(args.videos, config, _warn)
        out = write_dataset(
            args.out, importer.episodes(), importer.manifest_fields(args.seed), overwrite=args.overwrite
        )
    except (DatasetError, VideoImportError) as error:
        raise CliError(str(error)) from error
    except OSError as error:
        raise CliError(f"{args.out}: cannot write the dataset ({error})") from error
    n = sum(clip["episodes"] for clip in importer.report["clips"])
    print(f"wrote {n} episodes from {len(importer.report['clips'])} clip(s) to {out}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Draw one episode to a PNG contact sheet or a GIF."""
    from flam.worlds.contact_sheet import EpisodeView, SheetConfig, save_view
    from flam.worlds.dataset import Dataset, DatasetError

    if args.out.suffix.lower() not in (".png", ".gif"):
        raise CliError(f"--out {args.out}: expected a .png (contact sheet) or .gif (animation) file name")
    if not args.out.parent.is_dir():
        raise CliError(f"--out {args.out}: folder {args.out.parent} does not exist")
    if args.frames < 0:
        raise CliError(f"--frames: expected 0 (all) or more, got {args.frames}")
    try:
        dataset = Dataset.open(args.dataset)
        episode = args.episode
        if args.split is not None:
            members = dataset.split(args.split)
            if not members:
                raise CliError(f"{args.dataset}: split {args.split!r} is empty")
            if episode is None:
                episode = members[0]
            elif episode not in members:
                raise CliError(f"--episode {episode}: not in split {args.split!r} of {args.dataset}")
        episode = 0 if episode is None else episode
        manifest = dataset.manifest
        where = next((name for name, members in manifest["splits"].items() if episode in members), "?")
        title = (
            f"{dataset.path.name} - episode {episode} ({where}) - {manifest['world']}, "
            f"{dataset.frames_per_episode} frames of {dataset.image_size}x{dataset.image_size}"
        )
        view = EpisodeView(
            frames=dataset.frames(episode),
            truth=dataset.ground_truth(episode),
            colors=manifest["entity_colors"],
            n_agents=int(manifest["n_agents"]),
            action_names=dataset.action_names,
            title=title,
        )
    except DatasetError as error:
        raise CliError(str(error)) from error
    try:
        save_view(args.out, view, SheetConfig(max_frames=args.frames))
    except OSError as error:
        raise CliError(f"--out {args.out}: cannot write ({error})") from error
    print(f"wrote {args.out}")
    return 0


def run_subset(args: argparse.Namespace) -> int:
    """Copy the first episodes of a split into a new dataset folder."""
    from flam.worlds.dataset import Dataset, DatasetError, write_subset

    if args.count < 1:
        raise CliError("--count must be at least 1")
    try:
        dataset = Dataset.open(args.dataset)
        chosen = dataset.split(args.split)[: args.count]
        if not chosen:
            raise CliError(f"{args.dataset}: split {args.split!r} has no episodes")
        write_subset(dataset, chosen, args.out, overwrite=args.overwrite)
    except DatasetError as error:
        raise CliError(str(error)) from error
    print(f"wrote {args.out} ({len(chosen)} episodes from the {args.split} split)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print a summary of a dataset's manifest."""
    from flam.worlds.dataset import Dataset, DatasetError

    try:
        dataset = Dataset.open(args.dataset)
    except DatasetError as error:
        raise CliError(str(error)) from error
    m = dataset.manifest
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    disk = sum(p.stat().st_size for p in dataset.path.iterdir() if p.is_file())
    splits = " / ".join(f"{name} {len(members)}" for name, members in m["splits"].items())
    params = ", ".join(f"{k}={v}" for k, v in m["world_params"].items())
    source = m["source"].get("command") or m["source"].get("videos")
    rows = [
        ("dataset", f"{dataset.path} ({m['format']} v{m['version']}, {m['created_by']})"),
        ("world", f"{m['world']} ({params})"),
        ("episodes", f"{m['n_episodes']} x {m['frames_per_episode']} frames of {m['image_size']}x{m['image_size']}"),
        ("splits", splits),
        ("entities", f"{m['n_agents']} agents + {m['n_distractors']} distractors"),
        ("actions", ", ".join(m["action_names"]) if m["action_names"] else "none (imported video)"),
        ("ground truth", "actions, positions, headings, entity masks" if m["has_ground_truth"] else "none"),
        ("shards", f"{len(m['shards'])}, {disk / 2**20:.1f} MiB on disk"),
        ("seed", str(m["seed"])),
        ("source", str(source)),
    ]
    for name, value in rows:
        print(f"{name:<13} {value}")
    return 0
