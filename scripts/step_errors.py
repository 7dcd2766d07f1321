"""Where a model's one-step prediction goes wrong: with the action inferred from the true next frame (the `flam eval`
protocol at horizon 1), every agent's transition is sorted by what it did (moved a cell, turned in place, or neither:
it stayed or was blocked), and its error is the mean absolute pixel error (0..255) over the cells it covers before
and after. Also the error on the cells no agent touches, each kind's share of the frames' whole squared error, and
how often each agent's moves are lost.

Reproduces reports/recipe-variants ("the 8-agent error is in the moves"), on validation episodes, for every shipped
model of both sets (MODEL = flam-anchored, flam, flam-mixture, monolithic; N = 4, 8):
    .venv/bin/python scripts/step_errors.py checkpoints/multigrid-N/MODEL data/multigrid-N
    .venv/bin/python scripts/step_errors.py checkpoints/multigrid-8/flam-anchored data/multigrid-8 \
        --start 0 3 6 9 12 15 18 21 24 27
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 8 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-8
"""

import numpy as np
import torch
from analysis_inputs import analysis_parser, open_inputs

from flam.models.rollout import rollout
from flam.worlds.episode import TRANSITION_KINDS


def main() -> None:
    parser = analysis_parser(__doc__, episodes=64)
    parser.add_argument(
        "--start", type=int, nargs="+", default=[0], help="context frames (pooled); each prediction is of the next"
    )
    # An agent missing from its cell scores ~33-35 (its glyph covers part of the 8x8 cell), one drawn in place 4-9.
    parser.add_argument("--threshold", type=float, default=20.0, help="error (0..255) that counts as lost")
    args = parser.parse_args()
    model, dataset, episodes = open_inputs(parser, args)
    if not all(0 <= t < dataset.frames_per_episode - 1 for t in args.start):
        parser.error(f"--start frames must be in 0..{dataset.frames_per_episode - 2}")
    cell = dataset.image_size // dataset.manifest.get("probe_grid", 8)
    by_kind: dict[str, list[float]] = {kind: [] for kind in TRANSITION_KINDS}
    moved_by_agent: dict[int, list[float]] = {}
    kind_squared = {kind: 0.0 for kind in TRANSITION_KINDS}
    untouched_errors, untouched_squared, total = [], 0.0, 0.0
    all_frames = torch.from_numpy(dataset.frames_for(episodes))  # uint8 [B, T, H, W, 3]
    for t in args.start:
        frames = all_frames[:, t : t + 2]
        with torch.inference_mode():
            z, inference = model.analyse(frames)
            result = rollout(model, model.start(z[:, :1]), inference.actions[:, :1])
        error = np.abs(result.frames[:, -1].numpy().astype(np.float64) - frames[:, 1].numpy().astype(np.float64))
        cells_shape = (len(episodes), error.shape[1] // cell, cell, error.shape[2] // cell, cell, 3)
        per_cell = error.reshape(cells_shape).mean(axis=(2, 4, 5))  # [B, h, w]
        squared = (error**2).reshape(cells_shape).sum(axis=(2, 4, 5))
        touched = np.zeros(per_cell.shape, dtype=bool)
        for b, episode in enumerate(episodes):
            truth = dataset.ground_truth(episode)
            before, after = (truth.positions[t : t + 2] // cell).astype(int)  # [agents, 2] each
            kinds = truth.transitions(cell)[t]  # [agents]
            for agent in range(truth.n_entities):
                kind = TRANSITION_KINDS[kinds[agent]]
                cells = {tuple(before[agent]), tuple(after[agent])}
                agent_error = float(np.mean([per_cell[b, r, c] for r, c in cells]))
                by_kind[kind].append(agent_error)
                if kind == "moved":
                    moved_by_agent.setdefault(agent, []).append(agent_error)
                for r, c in cells:
                    if not touched[b, r, c]:
                        kind_squared[kind] += squared[b, r, c]
                    touched[b, r, c] = True
        untouched_errors.append(per_cell[~touched])
        untouched_squared += squared[~touched].sum()
        total += squared.sum()
    print(f"{args.checkpoint}: {len(episodes)} {args.split!r} episodes, frames {args.start} -> the next")
    for kind in TRANSITION_KINDS:
        errors = np.array(by_kind[kind])
        print(
            f"agents that {kind}: {len(errors)}, mean error {errors.mean():.1f}, lost (> {args.threshold:g}) "
            f"{(errors > args.threshold).mean():.0%}, share of all squared error {kind_squared[kind] / total:.0%}"
        )
    print(
        f"cells no agent touches: mean error {np.concatenate(untouched_errors).mean():.2f}, "
        f"share of all squared error {untouched_squared / total:.0%}"
    )
    lost = ", ".join(
        f"{agent}: {np.mean(np.array(errors) > args.threshold):.0%} of {len(errors)}"
        for agent, errors in sorted(moved_by_agent.items())
    )
    print(f"moves lost, by agent: {lost}")


if __name__ == "__main__":
    main()
