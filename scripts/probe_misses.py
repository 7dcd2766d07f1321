"""Where DCI's matched probes miss: each entity's probe from its matched slot, refitted as `flam eval` fits it, and
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
import torch
from analysis_inputs import analysis_parser, open_inputs, probe_inputs

from flam.models.metrics.dci import ProbeConfig, _fit_probes, dci, split_frames


def share(hits: torch.Tensor) -> str:
    return f"{hits.float().mean().item():.3f} of {hits.numel()}" if hits.numel() else "none"


def main() -> None:
    parser = analysis_parser(__doc__, episodes=100, checkpoint="a FLAM checkpoint")
    args = parser.parse_args()
    model, dataset, episodes = open_inputs(parser, args, slots=True)
    flat, cells, num_cells, groups = probe_inputs(model, dataset, episodes)
    result = dci(flat, cells, num_cells, groups=groups)  # the matching and penalties `flam eval` would use
    slots, entities = (torch.tensor(side) for side in zip(*result.matching, strict=True))
    # The matched probes alone, fitted as dci() fits them: standardised on the fit episodes, the picked penalty.
    fit = torch.from_numpy(split_frames(flat.shape[0], 0.5, 0, groups))
    x = flat[:, slots].float()  # [F,P,D]
    z = (x - x[fit].mean(dim=0)) / x[fit].std(dim=0, correction=0).clamp(min=1e-6)
    y = torch.as_tensor(cells)[:, entities].long()  # [F,P]
    pairs = torch.arange(len(slots))
    l2 = torch.as_tensor(result.l2, dtype=torch.float32)[slots, entities]
    penalties = torch.diag(l2) + (1 - torch.eye(len(slots)))  # off-diagonal probes are fitted too, and unused
    with torch.enable_grad():
        weight, bias = _fit_probes(z[fit], y[fit], num_cells, penalties, ProbeConfig())
    predicted = (torch.einsum("fpd,pdc->fpc", z, weight[pairs, pairs]) + bias[pairs, pairs]).argmax(dim=-1)  # [F,P]
    frames = dataset.frames_per_episode
    first = torch.from_numpy(np.arange(flat.shape[0]) % frames == 0)[:, None].expand_as(y)  # [F,P]
    before = torch.roll(y, 1, dims=0)  # the entity's cell in the frame before (meaningless on first frames)
    moved, held = (y != before) & ~first, (~fit)[:, None].expand_as(y)
    side = math.isqrt(num_cells)
    off = torch.maximum((predicted // side - y // side).abs(), (predicted % side - y % side).abs())  # cells away
    right, miss = predicted == y, held & (predicted != y)
    print(f"{args.checkpoint} on {len(episodes)} {args.split!r} episodes: matched probes (slot, entity) "
          f"{result.matching}, held-out accuracy {share(right[held])}")  # fmt: skip
    print(f"accuracy on first frames {share(right[held & first])}, where the entity moved "
          f"{share(right[held & moved])}, where it stayed {share(right[held & ~moved & ~first])}")  # fmt: skip
    print(f"misses one cell off {share(off[miss] == 1)}; naming the cell of the frame before "
          f"{share((predicted == before)[miss & ~first])}")  # fmt: skip


if __name__ == "__main__":
    main()
