"""Where each slot writes, against where it holds: a FLAM with a mixture or anchored aggregator predicts every cell as
a mixture of the slots' changes, weighted by their claims on it. Read off the first predicted step of the first
episodes of a split (actions inferred from the true frames), per agent: the claim each slot has on the agent's cell
next to the share of that cell the slot's attention mask holds. A slot that claims a cell it holds none of writes
there, so editing its action changes that agent too. Also the anchor's learned scale, and how saturated the masks
are: the median share the other slots keep of a token one slot holds most of (what a cost on the mass itself sees).

With --edit SLOT, that slot's actions are replaced by prior samples (as `flam eval`'s edit scores do) and the
script prints, per agent and rollout step, the share of the agent's true pixels that change against the unedited
rollout.

Reproduces reports/recipe-variants ("The jump cost on the log share"), on the run made there:
    .venv/bin/python scripts/slot_claims.py runs/mg8-jumplog data/multigrid-8 --split val --episodes 12 --edit 7
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 8 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-8
"""

import numpy as np
import torch
from analysis_inputs import analysis_parser, open_inputs

from flam.models.actions import prior_actions
from flam.models.evaluation.protocol import entity_cells
from flam.models.flam import MixtureAggregator
from flam.models.rollout import rollout

HORIZON = 10
CHANGED = 30  # summed |RGB difference| above which a pixel counts as changed


def rows(name: str, values: np.ndarray) -> None:
    print(name)
    for agent, row in enumerate(values):
        print(f"  agent {agent}: " + " / ".join(f"{v:.2f}" for v in row))


def main() -> None:
    parser = analysis_parser(__doc__, episodes=12, checkpoint="a FLAM checkpoint")
    parser.add_argument("--edit", type=int, help="a slot whose actions to replace by prior samples")
    args = parser.parse_args()
    model, dataset, episodes = open_inputs(parser, args, slots=True)
    lam = model.lam
    if not isinstance(lam.aggregator, MixtureAggregator):
        parser.error(f"{args.checkpoint} has the attention aggregator: its cells have no per-slot claims to read")
    if args.edit is not None and not 0 <= args.edit < lam.n_slots:
        parser.error(f"--edit must name a slot from 0 to {lam.n_slots - 1}")
    frames = torch.from_numpy(dataset.frames_for(episodes))  # uint8 [V, T, H, W, 3]
    with torch.inference_mode():
        z, inference = model.analyse(frames)
        start = model.start(z[:, :1])
        masks = start.masks.flatten(-2)  # [V, K, N]
        next_slots = lam.fdm(start.slots, inference.actions[:, 0].to(start.slots.dtype))
        _, claims = lam.aggregator.claims(start.z, next_slots, masks)  # [V, K, N]
    grid = inference.masks.shape[-1]
    positions = np.stack([dataset.ground_truth(e).positions for e in episodes])  # [V, T, N, 2]
    cells = torch.from_numpy(entity_cells(positions[:, 0], dataset.image_size, grid))  # [V, N] at the context frame

    def at_cells(per_token: torch.Tensor) -> np.ndarray:  # [V, K, N tokens] -> [agents, K]: read at each agent's cell
        return per_token.float().gather(2, cells[:, None].expand(-1, per_token.shape[1], -1)).mean(0).T.numpy()

    scale = lam.aggregator.anchor_scale
    print(
        f"{args.checkpoint}: {len(episodes)} episodes of '{args.split}'; anchor scale "
        + (f"{scale.item():.2f}" if scale is not None else "none (mixture aggregator)")
        + f", hard anchor {'on' if lam.config.hard_anchor else 'off'}"
    )
    rows("claim of each slot on each agent's cell, first predicted step (mean over episodes):", at_cells(claims))
    rows("share of each agent's cell each slot's mask holds:", at_cells(masks))
    every = inference.masks.flatten(-2).double()  # [V, T, K, N]
    top = every.max(dim=2).values
    others = (every.sum(dim=2) - top)[top > 0.5]
    print(f"median share the other slots keep of a token one slot holds most of: {others.median():.1e}")
    if args.edit is None:
        return
    actions = inference.actions[:, :HORIZON].float().clone()  # [V, H, K, A]: transitions from the first frame on
    k, a = actions.shape[2:]
    for i, episode in enumerate(episodes):
        actions[i, :, args.edit] = prior_actions(HORIZON, k, a, seed=episode)[:, args.edit]
    base = rollout(model, start, inference.actions[:, :HORIZON].float()).frames
    edited = rollout(model, start, actions).frames
    changed = ((edited.int() - base.int()).abs().sum(-1) > CHANGED).numpy()  # [V, H, Hpx, Wpx]
    shares = np.zeros((dataset.n_entities, HORIZON))
    for i, episode in enumerate(episodes):
        entity_map = dataset.ground_truth(episode).entity_map[1 : 1 + HORIZON]  # the frames the rollout predicts
        for agent in range(dataset.n_entities):
            pixels = entity_map == agent + 1  # [H, Hpx, Wpx]
            shares[agent] += (changed[i] & pixels).sum((1, 2)) / np.maximum(pixels.sum((1, 2)), 1) / len(episodes)
    rows(f"share of each agent's pixels changed with slot {args.edit} edited, steps 1 to {HORIZON}:", shares)


if __name__ == "__main__":
    main()
