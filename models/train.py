"""Training loops for the tokenizer (stage 1) and the latent action models (stage 2), one process or DDP.

One checkpoint folder per run, rewritten atomically every `checkpoint_every` steps with everything `--resume`
needs (weights, optimizer, step, RNG states), so a run killed with -9 loses only the steps since then. SIGTERM
(what `timeout` sends) and Ctrl-C instead stop a single-process run after the step in flight and checkpoint it,
so nothing is lost; a second signal stops at once.
Under torchrun (WORLD_SIZE > 1) every rank draws its own clips from a rank-specific RNG, gradients are averaged
by DistributedDataParallel, and rank 0 alone validates and writes checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from flam.models.checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    config_from_dict,
    file_sha256,
    flatten_optimizer_state,
    read_header,
    read_training,
    read_training_record,
    recover_folder,
    save_checkpoint,
    unflatten_optimizer_state,
)
from flam.models.flam import FLAMConfig
from flam.models.lam import count_action_slots
from flam.models.monolithic import MonolithicConfig
from flam.models.presets import ACTION_SIZE, TrainConfig, lam_preset, tokenizer_preset
from flam.models.registry import KINDS, build_model, load_model
from flam.models.tokenizer import FSQ, Tokenizer, frames_to_tensor
from flam.models.world_model import default_device
from flam.worlds.dataset import Dataset

Log = Callable[[str], None]


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a no-op for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())


def lr_at(step: int, train: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr_min_ratio * lr."""
    if step < train.warmup:
        return train.lr * (step + 1) / train.warmup
    progress = min(1.0, (step - train.warmup) / max(1, train.steps - train.warmup))
    floor = train.lr * train.lr_min_ratio
    return floor + (train.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """The loop both stages share: sample, step, clip, log, validate, checkpoint, resume."""

    def __init__(
        self,
        kind: str,
        model_config: Any,
        train: TrainConfig,
        out: Path,
        sample: Callable[[np.random.Generator, int], torch.Tensor],
        validate: Callable[[nn.Module], dict[str, float]],
        device: torch.device,
        world: Distributed,
        extra: dict[str, Any],
        log: Log,
        init: Path | None = None,
    ) -> None:
        self.kind, self.model_config, self.train, self.out = kind, model_config, train, Path(out)
        self.sample, self.validate, self.device, self.world, self.extra, self.log = (
            sample,
            validate,
            device,
            world,
            extra,
            log,
        )
        torch.manual_seed(train.seed)  # same initial weights on every rank
        self.model = build_model(kind, model_config).to(device)
        # Where the weights started when they did not start at random: the record of that run, kept for the card.
        self.init_record = _load_init(self.model, Path(init), kind, log) if init is not None else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        self.rng = np.random.default_rng([train.seed, world.rank])  # each rank draws different clips
        self.step = 0
        # One entry per process start (fresh or --resume): which command ran which steps on which hardware.
        self.sessions: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.history: list[dict[str, float]] = []
        # What the model did to itself between steps (FLAM's slot-split checks), with the step it happened at.
        self.events: list[dict[str, Any]] = []
        self.ddp = DistributedDataParallel(self.model) if world.world_size > 1 else None
        self.data_digest = hashlib.sha256()  # of every batch this process drew: shows ranks see different data

    def resume(self) -> None:
        """Continue from the checkpoint in `out` (weights, optimizer, step, RNG states, history)."""
        recover_folder(self.out)
        header = read_header(self.out, (self.kind,))
        saved = config_from_dict(KINDS[self.kind][0], header["config"])
        if saved != self.model_config:
            raise CheckpointError(f"{self.out}: was trained with another model config; resume with the same flags")
        model, _ = load_model(self.out, (self.kind,))
        self.model.load_state_dict(model.state_dict())
        training, tensors = read_training(self.out)
        self.optimizer.load_state_dict(unflatten_optimizer_state(tensors, training["optimizer"]))
        self.step = int(training["step"])
        self.seconds = float(training["seconds"])
        self.history = list(training["history"])
        self.events = list(training.get("events", []))
        self.sessions = list(training.get("sessions", []))
        if training.get("init", {}).get("weights_sha256") != (self.init_record or {}).get("weights_sha256"):
            raise CheckpointError(f"{self.out}: was started from other weights; resume with the same --init (or none)")
        rng_states = training["rng"]
        self.rng.bit_generator.state = rng_states[min(self.world.rank, len(rng_states) - 1)]
        torch.set_rng_state(tensors["torch_rng"])
        self.log(f"resumed {self.out} at step {self.step}")

    def _checkpoint(self) -> None:
        rng_states = self._gather(self.rng.bit_generator.state)
        data_digests = self._gather(self.data_digest.hexdigest())
        weight_digests = self._gather(_weights_digest(self.model))
        if not self.world.is_main:
            return
        optim_tensors, optim_rest = flatten_optimizer_state(self.optimizer.state_dict())
        training = {
            "step": self.step,
            "steps": self.train.steps,
            "seconds": round(self.seconds, 1),
            "world_size": self.world.world_size,
            "train_config": asdict(self.train),
            "history": self.history,
            "events": self.events,
            "optimizer": optim_rest,
            "rng": rng_states,
            "data_digests": data_digests,  # per rank, of the batches drawn since this process started
            "weight_digests": weight_digests,  # per rank: DDP keeps them identical
            "command": " ".join(sys.argv),
            "sessions": self.sessions,
            **({"init": self.init_record} if self.init_record else {}),
        }
        save_checkpoint(
            self.out,
            self.kind,
            self.model_config,
            self.model,
            extra=self.extra,
            training=training,
            training_state={**optim_tensors, "torch_rng": torch.get_rng_state()},
        )

    def _after_optimizer_step(self) -> None:
        """Let the model change itself between steps (FLAM's slot splitting), and record what it did."""
        hook = getattr(self.model, "after_optimizer_step", None)
        event = hook(self.optimizer) if hook is not None else None
        if event is None:
            return
        self.events.append(event)
        if self.world.is_main and "split" in event:
            self.log(
                f"[{self.kind}] step {event['step']}: split slot {event['split']} "
                f"(action rate {event['rates'][event['split']]:.2f} nats) into idle slot {event['into']}"
            )

    def _gather(self, value: Any) -> list[Any]:
        """The value from every rank, in rank order."""
        if self.world.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world.world_size
        dist.all_gather_object(values, value)
        return values

    def run(self) -> nn.Module:
        train = self.train
        net = self.ddp or self.model
        wanted = native_bf16(self.device) if train.bf16 is None else train.bf16
        autocast = wanted and self.device.type in ("cpu", "cuda")
        self.sessions.append(
            {
                "command": " ".join(sys.argv),
                "device": describe_device(self.device, self.world),
                "precision": "bf16" if autocast else "fp32",
                "from_step": self.step,
            }
        )
        session_started = self.seconds
        bar = tqdm(
            total=train.steps,
            initial=self.step,
            disable=not self.world.is_main,
            dynamic_ncols=True,
            unit="step",
            desc=self.kind,
        )
        with StopOnSignal(enabled=self.world.world_size == 1) as stop:
            self._loop(net, autocast, bar, stop, session_started)
        bar.close()
        if self.world.is_main:
            if stop.requested:
                self.log(
                    f"[{self.kind}] stopped by {stop.requested} at step {self.step} of {train.steps}; "
                    f"checkpoint written, continue with --resume -> {self.out}"
                )
            elif self.step == train.steps:
                rate = self.step / max(self.seconds, 1e-9)
                self.log(
                    f"[{self.kind}] done: {self.step} steps, {self.seconds:.0f} s, {rate:.2f} steps/s -> {self.out}"
                )
        return self.model

    def _loop(self, net: nn.Module, autocast: bool, bar: tqdm, stop: StopOnSignal, session_started: float) -> None:
        train = self.train
        while self.step < train.steps:
            started = time.perf_counter()
            net.train()
            batch = self.sample(self.rng, train.batch_size)
            self.data_digest.update(batch.numpy().tobytes())
            batch = batch.to(self.device)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, train)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                result = net(batch)
            self.optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
            self.optimizer.step()
            self._after_optimizer_step()
            self.step += 1
            self.seconds += time.perf_counter() - started
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in result.logs.items()} | {"gnorm": f"{grad_norm:.2f}"})
            if self.world.is_main and (self.step % train.val_every == 0 or self.step == train.steps):
                net.eval()
                with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                    metrics = self.validate(self.model)
                metrics = {"step": self.step, "seconds": round(self.seconds, 1), **metrics}
                self.history.append(metrics)
                self.log(f"[{self.kind}] validation " + " ".join(f"{k}={v:.5g}" for k, v in metrics.items()))
            stopping = stop.requested is not None  # read once: a signal during the checkpoint waits a step
            if self.step % train.checkpoint_every == 0 or self.step == train.steps or stopping:
                self.sessions[-1] |= {"to_step": self.step, "seconds": round(self.seconds - session_started, 1)}
                self._checkpoint()
            if stopping:
                return


def _load_init(model: nn.Module, folder: Path, kind: str, log: Log) -> dict[str, Any]:
    """Copy a checkpoint's weights into `model` (fine-tuning) and return that run's provenance.

    Every weight of the checkpoint must fit the model. Weights the checkpoint lacks keep their fresh initialisation
    (an option that adds some, e.g. a background sink's query), and so does the loss costs' step counter
    (`steps_trained`): a run that adds scheduled costs to a model trained without them starts their warm-up at 0.
    Slot-split statistics never carry over: the fine-tuning's first check looks at its own steps only.
    """
    source, _ = load_model(folder, (kind,))
    state = {k: v for k, v in source.state_dict().items() if k not in ("split_stats", "split_steps")}
    if "steps_trained" not in model.state_dict():  # the run drops the scheduled costs, and their counter with them
        state.pop("steps_trained", None)
    try:
        mismatched = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a shape differs
        raise CheckpointError(f"{folder}: its weights do not fit this model ({str(error).splitlines()[-1]})") from None
    if mismatched.unexpected_keys:
        raise CheckpointError(
            f"{folder}: this model has no place for its weights {', '.join(sorted(mismatched.unexpected_keys)[:4])}; "
            "fine-tuning can add parts (e.g. a background sink) and change loss options, not remove parts"
        )
    fresh = sorted(set(mismatched.missing_keys) - {"steps_trained", "split_stats", "split_steps"})
    if fresh:
        log(f"fine-tuning {folder}: these weights are new and start from their initialisation: {', '.join(fresh)}")
    training = read_training_record(folder) or {}
    return {
        "checkpoint": str(folder),
        "weights_sha256": file_sha256(folder / WEIGHTS_FILE),
        "step": training.get("step"),
        "seconds": training.get("seconds"),
        "sessions": training.get("sessions", []),
        "command": training.get("command"),
        "fresh_weights": fresh,
        **({"init": training["init"]} if "init" in training else {}),  # that run was fine-tuned too
    }


class StopOnSignal:
    """While active, SIGTERM and SIGINT set `requested` (the signal's name) so the loop can stop at a step boundary.

    Only a single process on the main thread installs handlers: DDP ranks would stop at different steps and hang
    in the next collective, and Python allows handlers on the main thread alone. A second signal raises
    KeyboardInterrupt, for a user who does not want to wait for the checkpoint.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if self.enabled:
            self._previous = {sig: signal.signal(sig, self._request) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _request(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: CUDA with bf16, or a CPU with AVX-512 BF16 or AMX. Only there is
    bf16 autocast the faster choice (~1.7x on an AVX-512 BF16 CPU); on an AVX2-only CPU torch emulates it, and a
    4-agent FLAM trained at 0.15 steps/s against 1.16 in fp32 (1 thread, AMD EPYC)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def describe_device(device: torch.device, world: Distributed) -> str:
    """What a model card needs to say about where steps ran: 'cpu, 2 threads' or 'cuda (NVIDIA H200)'."""
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        threads = torch.get_num_threads()
        where = f"{device.type}, {threads} thread{'' if threads == 1 else 's'}"
    return where if world.world_size == 1 else f"{where} x {world.world_size} processes"


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        flat = tensor.detach().cpu().reshape(-1).contiguous()  # 1-d: a 0-d tensor cannot be viewed as bytes
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _print(message: str) -> None:
    with tqdm.external_write_mode(file=sys.stderr):
        print(message, file=sys.stderr, flush=True)


def _announce(
    kind: str,
    model_config: Any,
    train: TrainConfig,
    world: Distributed,
    device: torch.device,
    model_params: int,
    log: Log,
) -> None:
    if world.is_main:
        resolved = {
            "kind": kind,
            "device": str(device),
            "world_size": world.world_size,
            "parameters": model_params,
            "model": asdict(model_config),
            "train": asdict(train),
        }
        log("resolved config: " + json.dumps(resolved))


def open_dataset(path: Path) -> Dataset:
    return Dataset.open(Path(path))


def train_tokenizer(
    data: Path,
    out: Path,
    preset: str = "default",
    steps: int | None = None,
    resume: bool = False,
    device: torch.device | None = None,
    bf16: bool | None = None,
    log: Log = _print,
    lr: float | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Stage 1: fit the tokenizer to a dataset's training frames (pixel MSE)."""
    device = device or default_device()
    world = init_distributed(device)
    dataset = open_dataset(data)
    model_config, train = tokenizer_preset(preset, dataset.image_size)
    train = _override(train, steps, bf16, lr, seed)
    train_frames = dataset.frames_for(dataset.split("train"))  # uint8 [E, T, H, W, 3]
    train_frames = torch.from_numpy(train_frames.reshape(-1, *train_frames.shape[2:]))  # [E*T, H, W, 3]
    val_frames = dataset.frames_for(dataset.split("val") or dataset.split("train")[:1])
    val_frames = torch.from_numpy(val_frames.reshape(-1, *val_frames.shape[2:]))

    def sample(rng: np.random.Generator, batch: int) -> torch.Tensor:
        return frames_to_tensor(train_frames[rng.integers(0, len(train_frames), batch)])  # [B, 3, H, W]

    def validate(model: nn.Module) -> dict[str, float]:
        count = min(len(val_frames), train.batch_size * train.val_batches)
        x = frames_to_tensor(val_frames[:count]).to(device)
        recon = model.decode(model.encode(x)).float().clamp(0, 1)
        mse = torch.mean((recon - x) ** 2).item()
        return {"val_mse": mse, "val_psnr": 10 * math.log10(1.0 / max(mse, 1e-10))}

    extra = {"data": _data_summary(dataset, data)}
    trainer = Trainer("tokenizer", model_config, train, out, sample, validate, device, world, extra, log)
    _announce("tokenizer", model_config, train, world, device, _count(trainer.model), log)
    if resume:
        trainer.resume()
    return trainer.run()


def _init_config(
    folder: Path, arch: str, tokenizer_dir: Path, tokenizer_sha256: str, slots: int | None, action_size: int | None
) -> FLAMConfig | MonolithicConfig:
    """The model config of the checkpoint a fine-tuning run starts from, checked against the run's other inputs."""
    header = read_header(folder, (arch,))
    if slots is not None or action_size is not None:
        raise ValueError("--init takes K and the action size from its checkpoint; leave out --slots and --action-size")
    if header.get("tokenizer", {}).get("sha256") != tokenizer_sha256:
        raise ValueError(f"{folder} was trained on another tokenizer than {tokenizer_dir}; pass the one it used")
    return config_from_dict(KINDS[arch][0], header["config"])


def _override(
    train: TrainConfig, steps: int | None, bf16: bool | None, lr: float | None = None, seed: int | None = None
) -> TrainConfig:
    if lr is not None:
        if not lr > 0:
            raise ValueError("--lr must be positive")
        train = replace(train, lr=lr)
    if seed is not None:
        train = replace(train, seed=seed)
    if steps is not None:
        if steps < 1:
            raise ValueError("--steps must be at least 1")
        train = replace(train, steps=steps, warmup=min(train.warmup, max(1, steps // 10)))
    if bf16 is not None:
        train = replace(train, bf16=bf16)
    return train


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _data_summary(dataset: Dataset, path: Path) -> dict[str, Any]:
    manifest = dataset.manifest
    keys = ("world", "seed", "n_agents", "n_episodes", "steps", "image_size", "source")
    return {"path": str(path), **{k: manifest.get(k) for k in keys if k in manifest}}


@torch.inference_mode()
def encode_dataset(
    tokenizer: Tokenizer, dataset: Dataset, episodes: list[int], device: torch.device, chunk: int = 512
) -> torch.Tensor:
    """FSQ codes of every frame of some episodes as small ints, int8 [E, T, E_feat, h, w] on the CPU."""
    frames = dataset.frames_for(episodes)  # uint8 [E, T, H, W, 3]
    flat = torch.from_numpy(frames.reshape(-1, *frames.shape[2:]))
    codes = []
    for start in range(0, len(flat), chunk):
        z = tokenizer.encode(frames_to_tensor(flat[start : start + chunk]).to(device))
        codes.append(tokenizer.fsq.indices(z).cpu())
    out = torch.cat(codes)  # [E*T, E_feat, h, w]
    return out.reshape(len(episodes), frames.shape[1], *out.shape[1:])


def cached_codes(
    tokenizer_dir: Path, tokenizer: Tokenizer, dataset: Dataset, data: Path, split: str, device: torch.device
) -> torch.Tensor:
    """Tokenizer codes of one split, cached in the dataset folder by tokenizer weight hash (int8 .npy)."""
    digest = file_sha256(Path(tokenizer_dir) / WEIGHTS_FILE)[:16]
    path = Path(data) / "cache" / f"codes-{digest}-{split}.npy"
    if path.exists():
        return torch.from_numpy(np.load(path))
    codes = encode_dataset(tokenizer, dataset, dataset.split(split), device)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, codes.numpy())
    os.replace(tmp, path)
    return codes


def draw_clips(
    codes: torch.Tensor, fsq: FSQ, rng: np.random.Generator, count: int, frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random clips of encoded episodes (int8 codes [episodes, T, E, h, w]) -> their feature grids
    [count, frames, E, h, w] and where each frame came from [2, count, frames] (episode, frame)."""
    episodes = torch.from_numpy(rng.integers(0, codes.shape[0], count))
    starts = torch.from_numpy(rng.integers(0, codes.shape[1] - frames + 1, count))
    idx = starts[:, None] + torch.arange(frames)[None]  # [B, T]
    z = fsq.from_indices(codes[episodes[:, None], idx].flatten(0, 1)).unflatten(0, (count, frames))
    return z, torch.stack([episodes[:, None].expand_as(idx), idx])


def token_masks(entity_map: np.ndarray, grid: int, n_entities: int) -> np.ndarray:
    """Pixel entity map uint8 [T, H, W] -> share of each token's pixels per entity, float [T, N, h, w]."""
    t, height, width = entity_map.shape
    cell = height // grid
    onehot = entity_map[:, None] == np.arange(1, n_entities + 1)[None, :, None, None]  # [T, N, H, W]
    return onehot.reshape(t, n_entities, grid, cell, grid, cell).mean(axis=(3, 5))


def binding_scores(masks: torch.Tensor, entity_tokens: torch.Tensor) -> dict[str, float]:
    """How well slots bind entities on validation clips.

    masks [F, K, h, w] (slot masks, sum at most 1 over K), entity_tokens [F, N, h, w] (each entity's share of a token).
    `binding`: share of entities whose dominant slot is dominant for no other entity; `purity`: mean mask mass
    of an entity's tokens that goes to its dominant slot.
    """
    mass = torch.einsum("fkhw,fnhw->nk", masks.float(), entity_tokens.float())  # [N, K]
    owners = mass.argmax(dim=1)  # [N]
    unique = [(owners == owners[i]).sum().item() == 1 for i in range(len(owners))]
    purity = (mass.max(dim=1).values / mass.sum(dim=1).clamp_min(1e-9)).mean().item()
    return {"binding": float(np.mean(unique)), "purity": purity}


def train_lam(
    arch: str,
    tokenizer_dir: Path,
    data: Path,
    out: Path,
    preset: str = "default",
    steps: int | None = None,
    resume: bool = False,
    slots: int | None = None,
    action_size: int | None = None,
    overrides: dict[str, Any] | None = None,
    device: torch.device | None = None,
    bf16: bool | None = None,
    log: Log = _print,
    init: Path | None = None,
    lr: float | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Stage 2: train FLAM or the monolithic baseline on the frozen tokenizer's cached codes.

    With `init`, the weights and model config (plus `overrides`) start from that checkpoint, with a fresh optimizer
    and schedule: fine-tuning, e.g. with a cost that would stop a run from scratch binding its slots."""
    device = device or default_device()
    world = init_distributed(device)
    dataset = open_dataset(data)
    tokenizer, _ = load_model(Path(tokenizer_dir), ("tokenizer",))
    tokenizer = tokenizer.to(device)
    tok = tokenizer.config
    if tok.image_size != dataset.image_size:
        raise ValueError(f"the tokenizer takes {tok.image_size}px frames, the dataset has {dataset.image_size}px")
    n_slots = slots or max(2, int(dataset.manifest.get("n_agents") or 4) + 2)
    model_config, train = lam_preset(preset, arch, tok.feature_dim, tok.grid, n_slots, action_size or ACTION_SIZE)
    tokenizer_sha256 = file_sha256(Path(tokenizer_dir) / WEIGHTS_FILE)
    if init is not None:
        model_config = _init_config(Path(init), arch, Path(tokenizer_dir), tokenizer_sha256, slots, action_size)
    if overrides:
        model_config = _apply_overrides(model_config, overrides)
    if arch == "flam" and model_config.factorizer.code_levels not in ((), tuple(tok.levels)):
        raise ValueError(
            f"factorizer.code_levels={list(model_config.factorizer.code_levels)} does not match the tokenizer's FSQ "
            f"levels {list(tok.levels)}; pass those"
        )
    train = _override(train, steps, bf16, lr, seed)
    if dataset.frames_per_episode < train.clip_frames:
        train = replace(train, clip_frames=dataset.frames_per_episode)
    # Every rank encodes (or reads the cache) itself; rank 0 writes the cache first so the others read it.
    if world.is_main:
        train_codes = cached_codes(tokenizer_dir, tokenizer, dataset, data, "train", device)
    if world.world_size > 1:
        dist.barrier()
    if not world.is_main:
        train_codes = cached_codes(tokenizer_dir, tokenizer, dataset, data, "train", device)
    val_episodes = dataset.split("val") or dataset.split("train")[:4]
    val_codes = encode_dataset(tokenizer, dataset, val_episodes, device)
    fsq = tokenizer.fsq
    clip = train.clip_frames

    def sample(rng: np.random.Generator, batch: int) -> torch.Tensor:
        return draw_clips(train_codes, fsq, rng, batch, clip)[0]

    val_count = min(val_codes.shape[0], train.batch_size * train.val_batches)
    val_clips = fsq.from_indices(val_codes[:val_count, :clip].flatten(0, 1)).unflatten(0, (val_count, clip))
    entity_tokens = None
    if dataset.has_ground_truth and dataset.n_entities > 0:
        maps = [dataset.ground_truth(e).entity_map[:clip] for e in val_episodes[:val_count]]
        entity_tokens = torch.from_numpy(
            np.stack([token_masks(m, tok.grid, dataset.n_entities) for m in maps])
        ).flatten(0, 1)  # [F, N, h, w]

    def validate(model: nn.Module) -> dict[str, float]:
        losses, accs, masks, rates = [], [], [], []
        for start in range(0, val_count, train.batch_size):
            z = val_clips[start : start + train.batch_size].to(device)
            result = model(z)
            target = z[:, 1:]
            hit = (fsq.snap(result.prediction.float()) == target).all(dim=2)  # [B, T-1, h, w]
            losses.append(result.logs["mse"])
            accs.append(hit.float().mean().item())
            if arch == "flam":
                inference = model.infer(z)
                rates.append(inference.rates().flatten(0, 1).cpu())  # [B*(T-1), K]
                if entity_tokens is not None:
                    masks.append(inference.masks.float().cpu())
        metrics = {"val_mse": float(np.mean(losses)), "val_token_acc": float(np.mean(accs))}
        if rates:  # masks can look bound while a slot's action is dead: count the slots that carry actions
            metrics["action_slots"] = count_action_slots(torch.cat(rates).mean(dim=0))
        if masks:
            metrics |= binding_scores(torch.cat(masks).flatten(0, 1), entity_tokens)
        return metrics

    extra = {
        "tokenizer": {
            "path": os.path.relpath(Path(tokenizer_dir).resolve(), Path(out).resolve()),
            "sha256": tokenizer_sha256,
        },
        "data": _data_summary(dataset, data),
    }
    trainer = Trainer(arch, model_config, train, out, sample, validate, device, world, extra, log, init)
    _announce(arch, model_config, train, world, device, _count(trainer.model), log)
    if resume:
        trainer.resume()
    return trainer.run()


def _apply_overrides(config: Any, overrides: dict[str, Any], prefix: str = "") -> Any:
    """Set top-level or nested (`factorizer.temporal_attention`) config fields by name. Every level is rebuilt, and so
    validated, once with all its changes, so options that need each other may come in any order
    (`split_every=250` before `factorizer.query_offsets=true`)."""
    names = {f.name for f in fields(config)}
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise ValueError(f"unknown model option {prefix + key!r}; known: {sorted(names)}")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = _typed(prefix + key, value, getattr(config, head))
    for head, inner in nested.items():
        direct[head] = _apply_overrides(getattr(config, head), inner, f"{prefix}{head}.")
    return replace(config, **direct)


# What each kind of option takes, for the error message; and the JSON values accepted for it.
_OPTION_KINDS: dict[type, tuple[str, tuple[type, ...]]] = {
    bool: ("true or false", (bool,)),
    int: ("a whole number", (int,)),
    float: ("a number", (int, float)),
    str: ("a word", (str,)),
    tuple: ("a list such as [5,5,5]", (list, tuple)),
}


def _typed(key: str, value: Any, current: Any) -> Any:
    """The value for option `key` as the type of its current value, or a ValueError that says what it takes (the
    config's own checks compare numbers, and would fail on a word with a TypeError)."""
    if is_dataclass(current):
        raise ValueError(f"{key} is a group of options; set them one by one: {key}.NAME=VALUE")
    name, accepted = _OPTION_KINDS.get(type(current), (type(current).__name__, (type(current),)))
    if not isinstance(value, accepted) or (isinstance(value, bool) and type(current) is not bool):
        raise ValueError(f"--set {key}: takes {name}, got {json.dumps(value)}")
    return type(current)(value)
