"""Does a slot split hold? Splits a trained FLAM's crowded slot into an idle one on one batch of training clips, the
way `split_every` does during training (`Factorizer.split_slot`), then takes plain training steps and prints the two
slots' attention mass (tokens) and action rate (nats) on a fixed batch of validation clips as it goes, with the
model's one-step prediction MSE on them. Optionally only the slot initialisations train (`--only-inits`), to tell
the gradient on the split from the drift of the weights every slot shares. Nothing is written but the cache of
training codes that `flam train` keeps.

Reproduces the numbers in reports/recipe-variants ("splitting the crowded slot"):
    .venv/bin/python scripts/split_probe.py checkpoints/multigrid-8/flam-anchored data/multigrid-8 --slot 1 --into 5
    .venv/bin/python scripts/split_probe.py checkpoints/multigrid-8/flam-anchored data/multigrid-8 --slot 1 --into 5 \
        --only-inits
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 8 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-8
"""

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from flam.models.flam import FLAM
from flam.models.registry import load_model
from flam.models.train import cached_codes, encode_dataset
from flam.worlds.dataset import Dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a FLAM checkpoint folder")
    parser.add_argument("data", type=Path)
    parser.add_argument("--slot", type=int, required=True, help="the crowded slot")
    parser.add_argument("--into", type=int, required=True, help="the idle slot that becomes its copy")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--impurity-cost", type=float, default=1e-3)
    parser.add_argument("--only-inits", action="store_true", help="train the slot initialisations alone")
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded, header = load_model(args.checkpoint, ("flam",))
    model = FLAM(replace(loaded.config, impurity_cost=args.impurity_cost))
    model.load_state_dict(loaded.state_dict(), strict=False)  # the cost's step counter starts at 0, its ramp at 1
    tokenizer_dir = (args.checkpoint / header["tokenizer"]["path"]).resolve()
    tokenizer, _ = load_model(tokenizer_dir, ("tokenizer",))
    dataset = Dataset.open(args.data)
    train_codes = cached_codes(tokenizer_dir, tokenizer, dataset, args.data, "train", torch.device("cpu"))
    rng = np.random.default_rng(0)

    def clips(codes: torch.Tensor, count: int = 32, frames: int = 6) -> torch.Tensor:
        episodes = torch.from_numpy(rng.integers(0, codes.shape[0], count))
        starts = torch.from_numpy(rng.integers(0, codes.shape[1] - frames + 1, count))
        idx = starts[:, None] + torch.arange(frames)[None]  # [B, T]
        return tokenizer.fsq.from_indices(codes[episodes[:, None], idx].flatten(0, 1)).unflatten(0, (count, frames))

    if not dataset.split("val"):
        parser.error(f"{args.data} has no validation episodes to watch the slots on")
    fixed = clips(encode_dataset(tokenizer, dataset, dataset.split("val")[:64], torch.device("cpu")))
    pair = [args.slot, args.into]

    def report(label: str) -> None:
        training = model.training
        model.eval()
        with torch.no_grad():
            mass = model.factorizer(fixed).masks.sum(dim=-1).mean(dim=(0, 1))  # [K] tokens
            rate = model.infer(fixed).rates().mean(dim=(0, 1))  # [K] nats
            mse = model(fixed).logs["mse"]
        model.train(training)
        state = ", ".join(f"slot {k}: {mass[k]:.2f} tokens, {rate[k]:.2f} nats" for k in pair)
        print(f"{label:>12}: {state}; prediction MSE {mse:.4f}")

    report("before")
    if not model.factorizer.split_slot(args.slot, args.into, clips(train_codes)):
        parser.error(f"slot {args.slot} holds too few tokens of the batch to split")
    report("split")
    params = [model.factorizer.slot_init] if args.only_inits else list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    model.train()
    for step in range(1, args.steps + 1):
        result = model(clips(train_codes))
        optimizer.zero_grad()
        result.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 20 == 0:
            report(f"step {step}")


if __name__ == "__main__":
    main()
