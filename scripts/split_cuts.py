"""Where the cuts a slot split could make fall: on a trained FLAM's crowded slot, each way of cutting the tokens it
holds in two (a 2-means of their keys, the way an earlier split did; `entity_halves` with several numbers of key
kinds, the way `split_every` does), measured on clips of a split (validation by default) by which side each agent's
tokens and each of its headings land on. A cut along agents puts every agent's tokens on one side; a cut along
headings splits an agent. `whole` is the share of the held agents' tokens on their agent's majority side (1.0 = every
agent whole).

Reproduces reports/recipe-variants ("splitting the crowded slot"): that a 2-means cut of slot 1's keys follows the
agents' headings rather than the agents, and how the number of kinds (16 in `entity_halves`) compares:
    .venv/bin/python scripts/split_cuts.py checkpoints/multigrid-8/flam-anchored data/multigrid-8 --slot 1
    .venv/bin/python scripts/split_cuts.py checkpoints/multigrid-8/flam-anchored data/multigrid-8 --slot 1 \
        --split train [--clips 32]
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 8 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-8
"""

import numpy as np
import torch
from analysis_inputs import analysis_parser, open_inputs

from flam.models.factorizer import entity_halves, kmeans
from flam.models.train import draw_clips, encode_dataset
from flam.worlds.episode import HEADING_NAMES


def main() -> None:
    parser = analysis_parser(__doc__, episodes=64, checkpoint="a FLAM checkpoint")
    parser.add_argument("--slot", type=int, required=True, help="the crowded slot")
    parser.add_argument("--clips", type=int, default=64, help="clips of 6 frames from the split's episodes")
    args = parser.parse_args()
    model, dataset, split_episodes = open_inputs(parser, args, slots=True)
    tokenizer = model.tokenizer
    codes = encode_dataset(tokenizer, dataset, split_episodes, torch.device("cpu"))
    z, (episodes, frames) = draw_clips(codes, tokenizer.fsq, np.random.default_rng(0), args.clips, 6)
    keys, held, _ = model.lam.factorizer.held_tokens(args.slot, z)  # [B, T, N, D], [B, T, N]
    if held.sum() < 2:
        parser.error(f"slot {args.slot} holds fewer than two tokens of these clips")
    grid = tokenizer.config.grid
    # Which agent stands on each held token, and its heading (-1: none, the background)
    agent_on = torch.full(held.shape, -1, dtype=torch.long)
    heading_on = torch.full(held.shape, -1, dtype=torch.long)
    for b, (episode_row, frame_row) in enumerate(zip(episodes, frames, strict=True)):
        truth = dataset.ground_truth(split_episodes[int(episode_row[0])])
        for t, frame in enumerate(frame_row.tolist()):
            rows, cols = (truth.positions[frame] // (dataset.image_size // grid)).astype(int).T
            agent_on[b, t, rows * grid + cols] = torch.arange(len(rows))
            heading_on[b, t, rows * grid + cols] = torch.from_numpy(truth.headings[frame].astype(np.int64))
    agents, headings = agent_on[held], heading_on[held]  # [P]
    held_agents = [a for a in range(dataset.n_entities) if (agents == a).sum() >= 10]
    print(f"slot {args.slot} holds {int(held.sum())} tokens of {args.clips} clips; agents with at least 10 of them: "
          f"{held_agents} ({float((agents >= 0).float().mean()):.2f} of its tokens are agents')")  # fmt: skip
    cuts = {"2-means": kmeans(keys[held], 2) == 0}
    for kinds in (4, 8, 16, 32):
        cuts[f"entity_halves, {kinds} kinds"] = entity_halves(keys, held, grid, kinds)[held] > 0
    for name, side in cuts.items():
        whole, total, lines = 0, 0, []
        for a in held_agents:
            mine = side[agents == a].float()
            whole += int(max(mine.sum(), len(mine) - mine.sum()))
            total += len(mine)
            per_heading = " ".join(
                f"{HEADING_NAMES[h]} {side[(agents == a) & (headings == h)].float().mean():.2f}"
                for h in range(4)
                if ((agents == a) & (headings == h)).sum() >= 3
            )
            lines.append(f"    agent {a}: {mine.mean():.2f} of its tokens on side A ({per_heading})")
        print(f"{name}: whole {whole / total:.2f}")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
