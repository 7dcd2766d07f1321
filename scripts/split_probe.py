"""Does a slot split hold? Splits a trained FLAM's crowded slot into an idle one on one batch of training clips, the
way `split_every` does during training (`Factorizer.split_slot`), then takes plain training steps and prints the two
slots' attention mass (tokens) and action rate (nats) on a fixed batch of validation clips as it goes, with the
model's one-step prediction MSE on them. Optionally only the slot initialisations and query offsets train
(`--only-slots`), to tell the gradient on the split from the drift of the weights every slot shares; or the
factorizer stays fixed for the first `--hold` steps, so the networks after it learn the split slots before the
attention may move. Nothing is
written but the cache of training codes that `flam train` keeps.

Reproduces the numbers in reports/recipe-variants ("splitting the crowded slot"):
    .venv/bin/python scripts/split_probe.py checkpoints/multigrid-8/flam-anchored data/multigrid-8 --slot 1 --into 5
    .venv/bin/python scripts/split_probe.py checkpoints/multigrid-8/flam-anchored data/multigrid-8 --slot 1 --into 5 \
        --only-slots
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
from flam.models.train import cached_codes, draw_clips, encode_dataset
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
    parser.add_argument("--only-slots", action="store_true", help="train the slot initialisations and offsets alone")
    parser.add_argument(
        "--hold", type=int, default=0, help="keep the factorizer fixed for this many steps after the split (0: none)"
    )
    parser.add_argument("--every", type=int, default=20, help="report every this many steps")
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded, header = load_model(args.checkpoint, ("flam",))
    factorizer = replace(loaded.config.factorizer, query_offsets=True)  # a model without them: zeros, the same model
    model = FLAM(replace(loaded.config, factorizer=factorizer, impurity_cost=args.impurity_cost))
    model.load_state_dict(loaded.state_dict(), strict=False)  # the cost's step counter starts at 0, its ramp at 1
    tokenizer_dir = (args.checkpoint / header["tokenizer"]["path"]).resolve()
    tokenizer, _ = load_model(tokenizer_dir, ("tokenizer",))
    dataset = Dataset.open(args.data)
    train_codes = cached_codes(tokenizer_dir, tokenizer, dataset, args.data, "train", torch.device("cpu"))
    rng = np.random.default_rng(0)

    def clips(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return draw_clips(codes, tokenizer.fsq, rng, 32, 6)

    val_episodes = dataset.split("val")[:64]
    if not val_episodes or not dataset.has_ground_truth:
        parser.error(f"{args.data} has no validation episodes with ground truth to watch the slots on")
    fixed, (episodes, frames) = clips(encode_dataset(tokenizer, dataset, val_episodes, torch.device("cpu")))
    grid = tokenizer.config.grid
    positions = np.stack(  # [B, T, agents, 2] (row, column) in pixels
        [dataset.ground_truth(val_episodes[e]).positions[f] for e, f in zip(episodes[:, 0], frames, strict=True)]
    )
    rows, cols = torch.from_numpy(positions.astype(np.int64) // (dataset.image_size // grid)).unbind(-1)
    cells = rows * grid + cols  # [B, T, agents]: the token each agent stands on
    pair = [args.slot, args.into]

    def agent_shares() -> torch.Tensor:
        """[agents, 2]: the mean share of each agent's token held by the crowded slot and by the copy."""
        with torch.no_grad():
            masks = model.factorizer(fixed).masks[:, :, pair]  # [B, T, 2, N]
        return masks.gather(-1, cells[:, :, None].expand(-1, -1, 2, -1)).mean(dim=(0, 1)).T

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
    before = agent_shares()
    if not model.factorizer.split_slot(args.slot, args.into, clips(train_codes)[0]):
        parser.error(f"slot {args.slot} holds too few tokens of the batch to split")
    report("split")
    after = agent_shares()
    for agent in torch.nonzero(before.sum(1) > 0.2).flatten().tolist():  # the agents the pair held before
        print(
            f"{'':>12}  agent {agent}: slot {args.slot} held {before[agent, 0]:.2f} of its token, after the split "
            f"{after[agent, 0]:.2f}, the copy {after[agent, 1]:.2f}"
        )
    slot_params = [model.factorizer.slot_init, model.factorizer.query_offset]
    params = slot_params if args.only_slots else list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    model.train()
    model.factorizer.requires_grad_(not args.hold)  # AdamW skips parameters without gradients
    for step in range(1, args.steps + 1):
        if step == args.hold + 1:
            model.factorizer.requires_grad_(True)
        result = model(clips(train_codes)[0])
        optimizer.zero_grad()
        result.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.every == 0:
            report(f"step {step}")


if __name__ == "__main__":
    main()
