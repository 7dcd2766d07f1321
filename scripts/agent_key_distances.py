"""How far apart the agents look to a FLAM's slot attention: for every pair of agents, the distance between the mean
tokenizer code of the tokens each agent covers, and between the mean content keys the factorizer computes from them
(its token keys without the position embedding). Slots start from fixed learned queries, so two agents whose keys
lie close together tend to fall into one slot; compare the closest pairs with `scripts/slot_masses.py`. Last, whether
the codes tell the agents apart at all: the share of an agent's tokens whose exact code is most often that agent's.

    .venv/bin/python scripts/agent_key_distances.py checkpoints/multigrid-8/flam-anchored data/multigrid-8
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 8 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-8
"""

import numpy as np
import torch
from analysis_inputs import analysis_parser, open_inputs

from flam.models.train import token_masks

COVERED = 0.2  # a token belongs to an agent when the agent covers at least this share of its pixels (a triangle ~0.4)


def main() -> None:
    parser = analysis_parser(__doc__, episodes=20, checkpoint="a FLAM checkpoint")
    args = parser.parse_args()
    model, dataset, episodes = open_inputs(parser, args, slots=True)
    factorizer = model.lam.factorizer
    grid = model.tokenizer.config.grid
    codes, owners = [], []
    for episode in episodes:
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
    single = owner.sum(dim=1) == 1  # tokens one agent covers
    code_id = torch.unique(code[single], dim=0, return_inverse=True)[1]  # [S] which exact code each token has
    agent = owner[single].float().argmax(dim=1)  # [S]
    counts = torch.zeros(int(code_id.max()) + 1, owner.shape[1]).index_put_(
        (code_id, agent), torch.tensor(1.0), accumulate=True
    )
    print(
        f"\n{len(counts)} distinct codes on {int(single.sum())} tokens one agent covers; share whose code "
        f"is most often its own agent's: {counts.max(dim=1).values.sum() / counts.sum():.3f}"
    )


if __name__ == "__main__":
    main()
