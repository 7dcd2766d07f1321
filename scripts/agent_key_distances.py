"""How far apart the agents look to a FLAM's slot attention: for every pair of agents, the distance between the mean
tokenizer code of the tokens each agent covers, and between the mean content keys the factorizer computes from them
(its token keys without the position embedding). Slots start from fixed learned queries, so two agents whose keys
lie close together tend to fall into one slot; compare the closest pairs with `scripts/slot_masses.py`.

    .venv/bin/python scripts/agent_key_distances.py checkpoints/multigrid-8/flam-anchored data/multigrid-8
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 8 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-8
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from flam.models.train import token_masks
from flam.models.world_model import load_world_model
from flam.worlds.dataset import Dataset

COVERED = 0.2  # a token belongs to an agent when the agent covers at least this share of its pixels (a triangle ~0.4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a FLAM checkpoint folder")
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--episodes", type=int, default=20, help="the first N episodes of the split")
    args = parser.parse_args()
    model = load_world_model(args.checkpoint, torch.device("cpu"))
    factorizer = getattr(model.lam, "factorizer", None)
    if factorizer is None:
        parser.error(f"{args.checkpoint} is not a FLAM checkpoint (it has no slot attention)")
    dataset = Dataset.open(args.data)
    grid = model.tokenizer.config.grid
    codes, owners = [], []
    for episode in dataset.split(args.split)[: args.episodes]:
        z = model.encode(torch.from_numpy(np.asarray(dataset.frames(episode)))[None])[0]  # [T, E, h, w]
        codes.append(z.flatten(2).transpose(1, 2).flatten(0, 1))  # [T*N, E]
        shares = token_masks(dataset.ground_truth(episode).entity_map, grid, dataset.n_entities)  # [T, A, h, w]
        owners.append(torch.from_numpy(shares).flatten(2).transpose(1, 2).flatten(0, 1))  # [T*N, A]
    code, owner = torch.cat(codes), torch.cat(owners) >= COVERED
    with torch.no_grad():
        x = factorizer.embed(code)
        keys = factorizer.to_k(factorizer.norm_input(x + factorizer.input_mlp(x)))  # [T*N, D]
    print(f"{args.checkpoint}: {owner.shape[0]} tokens of {args.episodes} '{args.split}' episodes")
    for label, features in (("tokenizer code", code), ("content key", keys)):
        means = torch.stack([features[owner[:, agent]].mean(0) for agent in range(owner.shape[1])])  # [A, *]
        distance = torch.cdist(means, means).numpy()
        print(f"\ndistance between the agents' mean {label}s (agents 0..{len(distance) - 1})")
        for agent, row in enumerate(distance):
            print(f"agent {agent}: " + " ".join(f"{v:6.2f}" for v in row))
        nearest = np.where(np.eye(len(distance), dtype=bool), np.inf, distance).argmin(1)
        print("nearest: " + ", ".join(f"{a}->{b}" for a, b in enumerate(nearest)))


if __name__ == "__main__":
    main()
