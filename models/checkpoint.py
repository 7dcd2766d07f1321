"""Checkpoint folders: config.json + model.safetensors (+ training.json). Nothing is ever unpickled.

A folder is written under a temporary name and renamed into place, so a crash never leaves a half-written
checkpoint that looks complete. Loading checks the format, the kind and every tensor's name and shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "flam-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "training.json"
TRAINING_STATE_FILE = "training_state.safetensors"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used, with what is wrong and where."""


def config_to_dict(config: Any) -> dict[str, Any]:
    """A (nested) frozen config dataclass -> JSON-ready dict."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from `config_to_dict` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise CheckpointError(f"{cls.__name__} has no fields {sorted(unknown)}")
    values = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value)
        elif typing.get_origin(hint) is tuple or (isinstance(hint, types.GenericAlias) and hint.__origin__ is tuple):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _backup_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.previous")


def write_folder_atomically(target: Path, write: typing.Callable[[Path], None]) -> None:
    """Run `write(tmp_dir)`, then swap tmp_dir into `target`.

    Replacing an existing folder takes two renames; if the process dies between them, the previous folder is
    left under a backup name that `recover_folder` puts back.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        for path in tmp.iterdir():  # flush file contents before the rename makes them visible
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            path.chmod(0o644)  # mkdtemp and safetensors create owner-only files; checkpoints are shared read-only
        tmp.chmod(0o755)
        backup = _backup_name(target)
        if target.exists():
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
        os.replace(tmp, target)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_folder(target: Path) -> None:
    """Undo a replacement interrupted between its two renames (see `write_folder_atomically`)."""
    backup = _backup_name(Path(target))
    if backup.exists() and not Path(target).exists():
        os.replace(backup, target)


def save_checkpoint(
    folder: Path,
    kind: str,
    config: Any,
    model: nn.Module,
    extra: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    training_state: dict[str, torch.Tensor] | None = None,
    files: dict[str, bytes] | None = None,
) -> None:
    """Write a checkpoint folder atomically.

    `extra` goes into config.json beside the model config (e.g. the tokenizer a LAM was trained on);
    `training`/`training_state` are the JSON and tensor halves of what `--resume` needs; `files` are small
    extra files (model card, sample episodes).
    """
    weights = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    header = {"format": FORMAT, "version": VERSION, "kind": kind, "config": config_to_dict(config), **(extra or {})}

    def write(tmp: Path) -> None:
        save_file(weights, str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(header, indent=2) + "\n")
        if training is not None:
            (tmp / TRAINING_FILE).write_text(json.dumps(training, indent=2) + "\n")
        if training_state is not None:
            save_file({k: v.contiguous() for k, v in training_state.items()}, str(tmp / TRAINING_STATE_FILE))
        for name, data in (files or {}).items():
            (tmp / name).write_bytes(data)

    write_folder_atomically(Path(folder), write)


def read_header(folder: Path, kinds: tuple[str, ...] | None = None) -> dict[str, Any]:
    """config.json of a checkpoint folder, checked for format, version and kind."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    if not path.is_file():
        raise CheckpointError(f"{folder}: not a checkpoint folder ({CONFIG_FILE} is missing)")
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} config")
    if header.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {header.get('version')}, this code reads {VERSION}")
    if kinds is not None and header.get("kind") not in kinds:
        raise CheckpointError(f"{folder}: a {header.get('kind')} checkpoint, expected {' or '.join(kinds)}")
    return header


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file -> tensors, with truncation and corruption reported as CheckpointError."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: file is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({error})") from None


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load model.safetensors into `model`, requiring exactly the same names and shapes."""
    path = Path(folder) / WEIGHTS_FILE
    tensors = load_tensors(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]})"
        )
    model.load_state_dict(tensors, strict=True)


def read_training_record(folder: Path) -> dict[str, Any] | None:
    """training.json of a checkpoint folder (command, sessions, history, ...), None where `flam train` wrote none."""
    path = Path(folder) / TRAINING_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None


def training_lineage(training: dict[str, Any]) -> list[dict[str, Any]]:
    """A training record, then the records of the runs it was fine-tuned from (its `init` chain), newest first."""
    records = []
    while training:
        records.append(training)
        training = training.get("init")
    return records


def lineage_totals(training: dict[str, Any]) -> tuple[int, float]:
    """The steps and seconds of a run and of every run it was fine-tuned from, summed: what training the model from
    nothing with this recipe costs."""
    records = training_lineage(training)
    return sum(int(r.get("step") or 0) for r in records), sum(float(r.get("seconds") or 0.0) for r in records)


def read_training(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON and tensor halves of a checkpoint's training state (for --resume)."""
    folder = Path(folder)
    training = read_training_record(folder)
    if training is None:
        raise CheckpointError(f"{folder}: no {TRAINING_FILE}; it was not written by `flam train`")
    state_path = folder / TRAINING_STATE_FILE
    return training, (load_tensors(state_path) if state_path.exists() else {})


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state_dict -> (tensors for safetensors, JSON-ready rest), so nothing needs pickle."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        scalars = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu()
            else:
                scalars[key] = value
        per_param[str(index)] = scalars
    return tensors, {"param_groups": state["param_groups"], "scalars": per_param}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {int(i): dict(s) for i, s in rest["scalars"].items()}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}
