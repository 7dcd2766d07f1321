"""Where DCI's shortfall sits: a split's DCI with one fixed probe penalty, with the per-probe picked penalties
(what `flam eval` does), and with the picked penalties on the entity-matched slots alone.

Reproduces the diagnosis in the README and in models/metrics/dci.py (run on the validation split: the test
split stays for `flam eval`):
    .venv/bin/python scripts/dci_penalties.py checkpoints/multigrid-4/flam-anchored data/multigrid-4 --split val
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 4 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-4
"""

import numpy as np
from analysis_inputs import analysis_parser, open_inputs, probe_inputs

from flam.models.metrics.dci import DCIResult, ProbeConfig, dci, dci_from_importance


def show(label: str, result: DCIResult) -> None:
    matched = [round(float(result.accuracy[i, j]), 2) for i, j in result.matching]
    print(
        f"{label}: D {result.disentanglement:.3f}  C {result.completeness:.3f}  I {result.informativeness:.3f}  "
        f"(matched probes' held-out accuracy {matched})"
    )
    print(np.array2string(result.importance, precision=2, suppress_small=True))


def main() -> None:
    parser = analysis_parser(__doc__, episodes=100, checkpoint="a FLAM checkpoint")
    parser.add_argument("--fixed-l2", type=float, default=1e-3, help="the penalty every probe used before")
    args = parser.parse_args()
    model, dataset, episodes = open_inputs(parser, args, slots=True)
    flat, cells, num_cells, groups = probe_inputs(model, dataset, episodes)
    print(f"{args.checkpoint} on {len(episodes)} {args.split!r} episodes; importance R is slots x entities")
    show(
        f"fixed penalty {args.fixed_l2:g}",
        dci(flat, cells, num_cells, groups=groups, config=ProbeConfig(l2_grid=(args.fixed_l2,))),
    )
    picked = dci(flat, cells, num_cells, groups=groups)
    show("picked penalties", picked)
    keep = [slot for slot, _ in picked.matching]
    # The same probes, restricted to the matched slots' rows of R (as `flam eval` restricts to its action slots).
    alone = dci_from_importance(picked.importance[keep], picked.accuracy[keep], ProbeConfig().min_importance)
    show(f"picked penalties, matched slots {keep} alone", alone)


if __name__ == "__main__":
    main()
