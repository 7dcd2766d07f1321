"""Do a FLAM's inferred actions tell what each agent did? For every agent and transition of the first frames of
validation episodes, the inferred action (posterior mean) of the slot that holds the agent's cell is labelled with
what the agent did (moved a cell, turned in place, or neither), and a small MLP probe, fitted on two thirds of them,
predicts the label on the rest. Prints each label's recall: a kind of transition the actions do not tell apart is one
the model cannot predict either. Also how far the slot's attention mask moves (its centroid, grid from -1 to 1,
divided by max(mass, 1)) for each kind: whether the slots see the move that the actions miss.

Reproduces reports/recipe-variants ("the 8-agent error is in the moves"):
    .venv/bin/python scripts/action_probe.py checkpoints/multigrid-8/flam-anchored data/multigrid-8
    .venv/bin/python scripts/action_probe.py checkpoints/multigrid-4/flam-anchored data/multigrid-4
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 8 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-8
"""

import numpy as np
import torch
import torch.nn.functional as F
from analysis_inputs import analysis_parser, open_inputs

from flam.worlds.episode import TRANSITION_KINDS


def main() -> None:
    parser = analysis_parser(__doc__, episodes=100, checkpoint="a FLAM checkpoint")
    parser.add_argument("--frames", type=int, default=8, help="the first this many frames of each episode")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, dataset, episodes = open_inputs(parser, args, slots=True)
    frames = torch.from_numpy(dataset.frames_for(episodes))[:, : args.frames]
    with torch.inference_mode():
        _, inference = model.analyse(frames)
    actions = inference.actions.float().numpy()  # [B, T-1, K, A]
    masks = inference.masks.float().numpy()  # [B, T, K, h, w]
    cell = dataset.image_size // masks.shape[-1]
    axis = np.linspace(-1, 1, masks.shape[-1])
    coords = np.stack(np.meshgrid(axis, axis, indexing="ij"))  # [2, h, w] (row, column)

    def centroid(mask: np.ndarray) -> np.ndarray:
        return (mask * coords).sum(axis=(1, 2)) / max(mask.sum(), 1.0)

    features, labels, shifts = [], [], []
    for b, episode in enumerate(episodes):
        truth = dataset.ground_truth(episode)
        cells = (truth.positions // cell).astype(int)  # [T, agents, 2]
        kinds = truth.transitions(cell)  # [T-1, agents]
        for t in range(args.frames - 1):
            for agent in range(truth.n_entities):
                row, col = cells[t, agent]
                slot = masks[b, t, :, row, col].argmax()
                labels.append(int(kinds[t, agent]))
                features.append(actions[b, t, slot])
                shifts.append(np.abs(centroid(masks[b, t + 1, slot]) - centroid(masks[b, t, slot])).sum())
    x, y = torch.tensor(np.array(features)), torch.tensor(labels)
    order = torch.randperm(len(y))
    fit, held_out = order[: len(y) * 2 // 3], order[len(y) * 2 // 3 :]
    mean, std = x[fit].mean(0), x[fit].std(0) + 1e-6
    x = (x - mean) / std
    hidden = torch.nn.Linear(x.shape[1], 64)
    probe = torch.nn.Sequential(hidden, torch.nn.ReLU(), torch.nn.Linear(64, len(TRANSITION_KINDS)))
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(500):
        optimizer.zero_grad()
        F.cross_entropy(probe(x[fit]), y[fit]).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(x[held_out]).argmax(dim=1)
    print(f"{args.checkpoint}: {len(y)} agent transitions, probe scored on {len(held_out)}")
    for k, kind in enumerate(TRANSITION_KINDS):
        mine = y[held_out] == k
        shift = np.array(shifts)[(y == k).numpy()].mean()
        print(f"{kind}: {int(mine.sum())}, recall {(predicted[mine] == k).float().mean():.2f}; mask shift {shift:.3f}")


if __name__ == "__main__":
    main()
