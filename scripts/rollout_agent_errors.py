"""Which agents a model loses in its rollouts: at the last rollout step, each agent's mean absolute pixel error on
its true cell, the share of episodes where that error is above a threshold, and how the rollout's own slot masks
split the agent's true cell between slots.

Reproduces the README's rollout-flaw numbers (the `flam eval` protocol: context 1, actions inferred from the
true frames, horizon 10):
    .venv/bin/python scripts/rollout_agent_errors.py checkpoints/multigrid-4/flam-anchored data/multigrid-4
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 4 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-4
"""

import numpy as np
import torch
from analysis_inputs import analysis_parser, open_inputs

from flam.models.rollout import rollout


def main() -> None:
    parser = analysis_parser(__doc__, split="test", episodes=32, checkpoint="a FLAM checkpoint")
    parser.add_argument("--horizon", type=int, default=10)
    # An agent missing from its cell scores ~33-35 (its glyph covers part of the 8x8 cell), one drawn in place 4-9.
    parser.add_argument("--threshold", type=float, default=20.0, help="error (0..255) that counts as lost")
    args = parser.parse_args()
    model, dataset, episodes = open_inputs(parser, args, slots=True)
    frames = torch.from_numpy(dataset.frames_for(episodes))  # uint8 [B, T, H, W, 3]
    with torch.inference_mode():
        z, inference = model.analyse(frames)
        result = rollout(model, model.start(z[:, :1]), inference.actions[:, : args.horizon])
    last = args.horizon  # frame index of the last rollout step
    predicted = result.frames[:, -1].numpy().astype(np.float64)  # [B, H, W, 3]
    truth = frames[:, last].numpy().astype(np.float64)
    masks = result.masks[:, -1].numpy()  # [B, K, h, w]
    cell = dataset.image_size // masks.shape[-1]  # pixels per token
    n = dataset.n_entities
    error, share = np.zeros((len(episodes), n)), np.zeros((len(episodes), n, masks.shape[1]))
    for b, episode in enumerate(episodes):
        for agent, (row, col) in enumerate(dataset.ground_truth(episode).positions[last] // cell):
            y, x = int(row) * cell, int(col) * cell
            error[b, agent] = np.abs(
                predicted[b, y : y + cell, x : x + cell] - truth[b, y : y + cell, x : x + cell]
            ).mean()
            share[b, agent] = masks[b, :, int(row), int(col)]
    print(f"{args.checkpoint}: {len(episodes)} {args.split!r} episodes, rollout step {args.horizon}")
    for agent, color in enumerate(dataset.manifest.get("entity_colors") or [None] * n):
        print(
            f"agent {agent} (rgb {color}): mean error {error[:, agent].mean():.1f}, "
            f"lost (> {args.threshold:g}) in {(error[:, agent] > args.threshold).mean():.0%}, "
            f"rollout mask share of its cell by slot {np.round(share[:, agent].mean(axis=0), 2).tolist()}"
        )


if __name__ == "__main__":
    main()
