"""How much of the token grid each slot holds: mean, min and max over frames of every slot's attention mass (in
tokens), read off the ground-truth frames of a split. With a background sink the masses sum to less than the grid.
Then, per agent, which slots hold its cell (mean share over frames): it shows slots that hold several agents; how
often the slot holding most of it changes from one frame to the next (`flam eval`'s `binding.handover`): it shows
slots that swap agents; and the attention mass each slot holds beyond one token of what it held the frame before
(where `jump_cost` charges -log of the other slots' share).

Reproduces the README's slot masses (validation episodes; the test split stays for `flam eval`):
    .venv/bin/python scripts/slot_masses.py checkpoints/multigrid-4/flam-anchored data/multigrid-4 --split val
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 4 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-4
"""

import numpy as np
import torch
from analysis_inputs import analysis_parser, open_inputs

from flam.models.evaluation.protocol import slot_binding
from flam.models.flam import jumped_mass


def main() -> None:
    parser = analysis_parser(__doc__, episodes=16, checkpoint="a FLAM checkpoint")
    args = parser.parse_args()
    model, dataset, episodes = open_inputs(parser, args, slots=True)
    masses, cell_shares, all_masks = [], [], []
    for episode in episodes:
        frames = torch.from_numpy(np.asarray(dataset.frames(episode)))[None]  # [1, T, H, W, 3]
        _, inference = model.analyse(frames)
        all_masks.append(inference.masks[0].float())
        masks = all_masks[-1].numpy()  # [T, K, h, w]
        masses.append(masks.sum(axis=(-1, -2)))  # [T, K] tokens each slot holds
        cells = (dataset.ground_truth(episode).positions // (dataset.image_size // masks.shape[-1])).astype(int)
        time = np.arange(len(masks))[:, None]
        cell_shares.append(masks[time, :, cells[..., 0], cells[..., 1]])  # [T, N, K]
    mass = np.concatenate(masses)  # [F, K]
    grid = masks.shape[-1] * masks.shape[-2]
    print(f"{args.checkpoint}: slot masses in tokens of {grid}, {mass.shape[0]} frames of '{args.split}'")
    for name, values in (("mean", mass.mean(0)), ("min", mass.min(0)), ("max", mass.max(0))):
        print(f"{name:>4}: " + " / ".join(f"{v:.2f}" for v in values))
    share = np.concatenate(cell_shares).mean(0)  # [N, K]
    print("share of each agent's cell held by each slot (mean over frames):")
    for agent, row in enumerate(share):
        print(f"agent {agent}: " + " / ".join(f"{v:.2f}" for v in row) + f"  -> slot {row.argmax()}")
    stacked = torch.stack(all_masks)  # [V, T, K, h, w]
    handover = slot_binding(stacked, dataset, episodes)["handover"]
    print("share of transitions where another slot takes over the agent: " + " / ".join(f"{v:.2f}" for v in handover))
    jumped = jumped_mass(stacked).mean(dim=(0, 1))  # [K]
    print(
        "mass held beyond one token of the frame before, per transition: "
        + " / ".join(f"{v:.2f}" for v in jumped)
        + f" (sum {jumped.sum():.2f})"
    )


if __name__ == "__main__":
    main()
