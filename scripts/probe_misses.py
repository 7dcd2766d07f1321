"""Where DCI's matched probes miss: each entity's probe from its matched slot, as `flam eval` fits and scores it, and
its held-out misses split by distance (one cell off or further), by frame (the episode's first, frames where the
entity moved, frames where it stayed) and by whether it named the entity's cell of the frame before.

Reproduces the "DCI probes that converge" numbers in reports/recipe-variants (validation split; the test split stays
for `flam eval`):
    .venv/bin/python scripts/probe_misses.py checkpoints/multigrid-8/flam-anchored data/multigrid-8
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 8 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-8
"""

import math

import numpy as np
from analysis_inputs import analysis_parser, open_inputs, probe_inputs

from flam.models.metrics.dci import dci


def share(hits: np.ndarray) -> str:
    return f"{hits.mean():.3f} of {hits.size}" if hits.size else "none"


def main() -> None:
    parser = analysis_parser(__doc__, episodes=100, checkpoint="a FLAM checkpoint")
    args = parser.parse_args()
    model, dataset, episodes = open_inputs(parser, args, slots=True)
    flat, cells, num_cells, groups = probe_inputs(model, dataset, episodes)
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


if __name__ == "__main__":
    main()
