"""Whether DCI's probes have converged: a split's DCI with the probes' L-BFGS capped at several iteration counts,
and optionally with another grid of penalties to pick from. Scores that no longer move between caps (or with a
wider grid) are the representation's, not the optimizer's.

Reproduces the probe-iteration numbers in models/metrics/dci.py and the README (validation split; the test split
stays for `flam eval`):
    .venv/bin/python scripts/dci_probe_fits.py checkpoints/multigrid-8/flam-anchored data/multigrid-8 \
        --iterations 200 1000 2000
    .venv/bin/python scripts/dci_probe_fits.py checkpoints/multigrid-8/flam-anchored data/multigrid-8 \
        --iterations 1000 --l2-grid 1e-2 1e-3 1e-4 1e-5 1e-6
The rows of the solver it replaced: the same command with that solver's module put back,
    git show e3ccba8:models/metrics/dci.py > models/metrics/dci.py   # and `git checkout models/metrics/dci.py` after
The data is not in the repository; make it first (seconds) with the shipped set's command:
    .venv/bin/flam data generate --world multigrid --agents 8 --episodes 1000 --steps 32 --seed 0 --out data/multigrid-8
"""

import time

from analysis_inputs import analysis_parser, open_inputs, probe_inputs

from flam.models.metrics.dci import ProbeConfig, dci


def main() -> None:
    parser = analysis_parser(__doc__, episodes=100, checkpoint="a FLAM checkpoint")
    parser.add_argument("--iterations", type=int, nargs="+", default=[200, 1000], help="L-BFGS caps to compare")
    parser.add_argument("--l2-grid", type=float, nargs="+", help="the penalties each probe picks from (default: dci's)")
    args = parser.parse_args()
    if min(args.iterations) < 1:
        parser.error("--iterations must be positive")
    if args.l2_grid is not None and min(args.l2_grid) < 0:
        parser.error("--l2-grid penalties must be >= 0")
    grid = {} if args.l2_grid is None else {"l2_grid": tuple(args.l2_grid)}
    model, dataset, episodes = open_inputs(parser, args, slots=True)
    flat, cells, num_cells, groups = probe_inputs(model, dataset, episodes)
    size = f"{flat.shape[1]} slots x {cells.shape[1]} entities"
    print(f"{args.checkpoint} on {len(episodes)} {args.split!r} episodes ({size})")
    for iterations in args.iterations:
        started = time.perf_counter()
        result = dci(flat, cells, num_cells, groups=groups, config=ProbeConfig(max_iter=iterations, **grid))
        matched = [round(float(result.accuracy[i, j]), 3) for i, j in result.matching]
        print(
            f"at most {iterations} iterations: D {result.disentanglement:.3f}  C {result.completeness:.3f}  "
            f"I {result.informativeness:.3f}  ({time.perf_counter() - started:.0f} s; matched probes' held-out "
            f"accuracy {matched}; their penalties {[float(result.l2[i, j]) for i, j in result.matching]})",
            flush=True,
        )


if __name__ == "__main__":
    main()
