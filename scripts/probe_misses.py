"""Where DCI's matched probes miss: each entity's probe from its matched slot, as `flam eval` fits and scores it, and
its held-out misses split by distance (one cell off or further), by frame (the episode's first, frames where the
entity moved, frames where it stayed) and by whether it named the entity's cell of the frame before; and, where the
slot attention's grid is the probes', how often the matched slot's mask peaks on the entity's cell (what the slot
itself knows of where its entity is, read without a probe).

Reproduces the numbers in reports/recipe-variants (validation split; the test split stays for `flam eval`) of "A cell
code in the slots", on the shipped 8-agent model:
    .venv/bin/python scripts/probe_misses.py checkpoints/multigrid-8/flam-anchored data/multigrid-8
and of "DCI probes that converge", on that model as shipped before it had the cell code:
    git worktree add /tmp/flam-e8339ab e8339ab
    .venv/bin/python scripts/probe_misses.py /tmp/flam-e8339ab/checkpoints/multigrid-8/flam-anchored data/multigrid-8
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 8 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-8
"""

import math

import numpy as np
from analysis_inputs import analysis_parser, open_inputs, slot_frames

from flam.models.evaluation.protocol import dci_inputs
from flam.models.metrics.dci import dci


def share(hits: np.ndarray) -> str:
    return f"{hits.mean():.3f} of {hits.size}" if hits.size else "none"


def main() -> None:
    parser = analysis_parser(__doc__, episodes=100, checkpoint="a FLAM checkpoint")
    args = parser.parse_args()
    model, dataset, episodes = open_inputs(parser, args, slots=True)
    values, masks = slot_frames(model, dataset, episodes)
    flat, cells, num_cells, groups = dci_inputs(values, dataset, episodes)
    result = dci(flat, cells, num_cells, groups=groups)  # as `flam eval` scores them
    slots, entities = (list(side) for side in zip(*result.matching, strict=True))
    y = cells[result.scored][:, entities]  # [F',P]: the matched entities' cells on the scored frames
    predicted = result.predicted[:, slots, entities]  # [F',P]: their matched probes' predictions
    index = np.flatnonzero(result.scored)
    first = np.broadcast_to((index % dataset.frames_per_episode == 0)[:, None], y.shape)
    before = cells[index - 1][:, entities]  # the entity's cell in the frame before (meaningless on first frames)
    moved = (y != before) & ~first
    side = math.isqrt(num_cells)
    off = np.maximum(abs(predicted // side - y // side), abs(predicted % side - y % side))  # cells away
    right = predicted == y
    print(f"{args.checkpoint} on {len(episodes)} {args.split!r} episodes: matched probes (slot, entity) "
          f"{result.matching}, held-out accuracy {share(right)}")  # fmt: skip
    print(f"accuracy on first frames {share(right[first])}, where the entity moved {share(right[moved])}, "
          f"where it stayed {share(right[~moved & ~first])}")  # fmt: skip
    print(f"misses one cell off {share(off[~right] == 1)}; naming the cell of the frame before "
          f"{share((predicted == before)[~right & ~first])}")  # fmt: skip
    if masks.shape[-1] ** 2 == num_cells:  # token grid = probe grid: a mask's peak names a cell as a probe does
        peaks = masks.flatten(0, 1).flatten(-2).argmax(dim=-1).numpy()  # [F, K]
        on_cell = peaks[index][:, slots] == y
        print(f"the matched slots' masks peak on their entity's cell in {share(on_cell)} of the same frames")


if __name__ == "__main__":
    main()
