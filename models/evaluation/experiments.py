"""The paper's entity experiments as commands: scaling the number of agents, and correlated agents.

Scaling (the paper's Figure 4): for each agent count, generate a grid-world dataset, train a tokenizer, FLAM and
the monolithic baseline with the same reduced budget and the same total action size d (FLAM: K slots of d // K),
and evaluate both on held-out episodes. Correlated agents (the paper's Figure 7): 4 agents of which the first
two always take the same action, FLAM with K = 3: which slots bind which agents.
Every stage is skipped when its output is complete and resumed when it is partial, so a killed run continues.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flam.models.checkpoint import CONFIG_FILE, read_training_record
from flam.models.evaluation.protocol import EvalConfig, Evaluation, evaluate
from flam.models.model_set import TOKENIZER
from flam.models.presets import ACTION_SIZE
from flam.models.report import (
    dci_scores,
    line_plot,
    markdown_table,
    matrix_figure,
    write_eval_report,
    write_report_page,
    write_text,
)
from flam.models.train import train_lam, train_tokenizer
from flam.models.world_model import load_world_model
from flam.worlds.dataset import MANIFEST, Dataset, write_dataset
from flam.worlds.registry import generate_episodes, make_world, manifest_fields

Log = Callable[[str], None]
ARCHS = ("flam", "monolithic")


@dataclass(frozen=True)
class ExperimentConfig:
    """Data and training budget of an experiment; the same budget for every architecture."""

    agents: tuple[int, ...] = (2, 4, 8)
    episodes: int = 400  # generated per agent count (80/10/10 split)
    episode_steps: int = 32  # actions per episode
    correlated: int = 0  # the first this many agents share agent 0's action (0 = off)
    seed: int = 0
    preset: str = "default"
    tokenizer_steps: int | None = 2000  # None: the preset's
    lam_steps: int | None = 5000  # None: the preset's
    action_size: int = ACTION_SIZE  # total latent action size d, the same for both architectures
    extra_slots: int = 2  # FLAM K = agents + extra_slots ...
    slots: int | None = None  # ... unless K is fixed here (the correlated test: 3)
    archs: tuple[str, ...] = ARCHS

    def check(self) -> None:
        if not self.agents or min(self.agents) < 1:
            raise ValueError(f"agents: expected one or more counts >= 1, got {list(self.agents)}")
        if self.episodes < 10:
            raise ValueError(f"episodes: expected at least 10 (train/val/test split), got {self.episodes}")
        for name in ("tokenizer_steps", "lam_steps", "slots"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: expected at least 1, got {value}")
        unknown = set(self.archs) - set(ARCHS)
        if unknown:
            raise ValueError(f"archs: unknown {sorted(unknown)}; expected some of {list(ARCHS)}")

    def n_slots(self, agents: int) -> int:
        return self.slots or agents + self.extra_slots


def generate_data(out: Path, agents: int, config: ExperimentConfig) -> Path:
    """The grid-world dataset for one agent count (kept if already there)."""
    if (out / MANIFEST).is_file():
        return out
    world = make_world("multigrid", n_agents=agents, steps=config.episode_steps, correlated=config.correlated)
    c = world.config
    command = (
        f"flam data generate --world multigrid --agents {agents} --episodes {config.episodes} "
        f"--steps {config.episode_steps} --seed {config.seed} --size {c.image_size} --correlated {c.correlated} "
        f"--distractors {c.distractors} --palette {c.palette} --persistence {c.persistence}"
    )
    fields = manifest_fields("multigrid", world, config.seed, {"kind": "generate", "command": command})
    episodes = generate_episodes(world, config.seed, config.episodes)
    return write_dataset(out, episodes, fields, n_episodes=config.episodes, progress=False)


def _stage(folder: Path, steps: int | None, train: Callable[[bool], object], log: Log) -> None:
    """Train into `folder` unless it is complete; resume it when a partial checkpoint is there."""
    record = read_training_record(folder)
    if record is not None:
        if record.get("step", 0) >= (steps or record.get("steps", 0)):
            log(f"{folder}: complete ({record['step']} steps), kept")
            return
    train((folder / CONFIG_FILE).is_file())


def train_set(
    set_dir: Path, data: Path, agents: int, config: ExperimentConfig, device: torch.device, log: Log
) -> dict[str, Path]:
    """Tokenizer and the LAMs of one agent count under `set_dir`; returns the LAM folders by architecture."""
    tokenizer = set_dir / TOKENIZER
    _stage(
        tokenizer,
        config.tokenizer_steps,
        lambda resume: train_tokenizer(data, tokenizer, config.preset, config.tokenizer_steps, resume, device, log=log),
        log,
    )
    folders = {}
    for arch in config.archs:
        folder = set_dir / arch
        _stage(
            folder,
            config.lam_steps,
            lambda resume, arch=arch, folder=folder: train_lam(
                arch,
                tokenizer,
                data,
                folder,
                config.preset,
                config.lam_steps,
                resume,
                slots=config.n_slots(agents),
                action_size=config.action_size,
                device=device,
                log=log,
            ),
            log,
        )
        folders[arch] = folder
    return folders


def _run_counts(
    out: Path, config: ExperimentConfig, eval_config: EvalConfig, device: torch.device, log: Log
) -> dict[int, dict[str, Evaluation]]:
    """Data, training and evaluation for every agent count: {agents: {arch: Evaluation}}."""
    config.check()
    results = {}
    for agents in config.agents:
        name = f"multigrid-{agents}" + (f"-correlated-{config.correlated}" if config.correlated else "")
        data = generate_data(out / "data" / name, agents, config)
        log(f"{name}: training on {data}")
        folders = train_set(out / "checkpoints" / name, data, agents, config, device, log)
        dataset = Dataset.open(data)
        runs = {}
        for arch, folder in folders.items():
            log(f"{name}: evaluating {arch}")
            runs[arch] = evaluate(load_world_model(folder, device), dataset, eval_config, folder, log)
        results[agents] = runs
    return results


def _budget(config: ExperimentConfig) -> str:
    tok = config.tokenizer_steps or "the preset's"
    lam = config.lam_steps or "the preset's"
    return (
        f"preset `{config.preset}`, tokenizer {tok} steps, each latent action model {lam} steps (the same for "
        f"FLAM and the monolithic baseline); total action size d = {config.action_size} for both (FLAM: K slots "
        f"of d // K); {config.episodes} generated episodes of {config.episode_steps} steps per agent count, "
        f"seed {config.seed}"
    )


def _lite(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary without the episode list (the results file stays readable)."""
    return {**summary, "data": {k: v for k, v in summary["data"].items() if k != "episodes"}}


def run_scaling(
    out: Path,
    config: ExperimentConfig,
    eval_config: EvalConfig,
    device: torch.device,
    report: Path | None = None,
    log: Log = lambda message: None,
) -> dict[str, Any]:
    """The entity-scaling experiment; writes OUT/scaling.json and a report (default OUT/report)."""
    out = Path(out)
    results = _run_counts(out, config, eval_config, device, log)
    record = {
        "experiment": "scaling",
        "config": asdict(config),
        "eval_config": asdict(eval_config),
        "budget": _budget(config),
        "results": [
            {"agents": n, "slots": config.n_slots(n), **{arch: _lite(run.summary) for arch, run in runs.items()}}
            for n, runs in results.items()
        ],
    }
    write_text(out / "scaling.json", json.dumps(record, indent=2) + "\n")
    write_scaling_report(report or out / "report", results, config)
    return record


def _value(run: Evaluation | None, key: str, digits: int) -> str:
    if run is None:
        return "–"
    value = run.summary.get(key)
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


def _dci_cell(run: Evaluation | None) -> str:
    dci = run.summary.get("dci") if run is not None else None
    if not isinstance(dci, dict) or not dci.get("applicable"):
        return "n/a"
    return dci_scores(dci, digits=2)


def write_scaling_report(out: Path, results: dict[int, dict[str, Evaluation]], config: ExperimentConfig) -> Path:
    """Table, PSNR/SSIM-vs-agents plots and one comparison sub-report per agent count."""
    out = Path(out)
    agents = sorted(results)
    rows = []
    for n in agents:
        flam, mono = results[n].get("flam"), results[n].get("monolithic")
        gain = "–"
        if flam is not None and mono is not None:
            gain = f"{flam.summary['psnr'] - mono.summary['psnr']:+.2f}"
        rows.append(
            [
                str(n),
                str(config.n_slots(n)),
                _value(flam, "psnr", 2),
                _value(mono, "psnr", 2),
                gain,
                _value(flam or mono, "copy_psnr", 2),
                _value(flam, "ssim", 4),
                _value(mono, "ssim", 4),
                _value(flam, "st_lpips", 4),
                _value(mono, "st_lpips", 4),
                _value(flam, "fvd", 1),
                _value(mono, "fvd", 1),
                _dci_cell(flam),
                _value(flam, "edit_locality", 3) + " / " + _value(flam, "edit_effect", 3),
            ]
        )
    header = [
        "agents",
        "FLAM K",
        "FLAM PSNR",
        "mono PSNR",
        "Δ PSNR",
        "copy-frame PSNR",
        "FLAM SSIM",
        "mono SSIM",
        "FLAM ST-LPIPS",
        "mono ST-LPIPS",
        "FLAM FVD",
        "mono FVD",
        "FLAM DCI D / C / I",
        "FLAM edit locality / effect",
    ]
    labels = {"flam": "FLAM", "monolithic": "monolithic"}
    for key, unit in (("psnr", "PSNR (dB)"), ("ssim", "SSIM")):
        series = {
            labels[arch]: [results[n][arch].summary[key] for n in agents]
            for arch in config.archs
            if all(arch in results[n] for n in agents)
        }
        line_plot(series, out / f"scaling-{key}.png", "agents", unit, f"{unit} vs number of agents", x=agents)
    parts = [
        "# Entity scaling: FLAM vs the monolithic baseline",
        "",
        f"Budget: {_budget(config)}. This is a reduced budget, not the shipped models' training; it is the same "
        "for both architectures. Evaluation: `flam eval` protocol on the held-out test episodes of each dataset.",
        "",
        markdown_table(header, rows),
        "",
        "Δ PSNR: FLAM minus monolithic. Copy-frame PSNR: repeating the last context frame (no model), for scale.",
        "",
        "![PSNR vs agents](scaling-psnr.png) ![SSIM vs agents](scaling-ssim.png)",
        "",
    ]
    for n in agents:
        sub = f"agents-{n}"
        runs = [results[n][arch] for arch in config.archs if arch in results[n]]
        write_eval_report(out / sub, runs, f"{n} agents: " + " vs ".join(labels[a] for a in results[n]))
        parts.append(f"- [{n} agents: rollouts, slots, correspondence, edits]({sub}/README.md)")
    return write_report_page(out, "\n".join(parts) + "\n")


def run_correlated(
    out: Path,
    config: ExperimentConfig,
    eval_config: EvalConfig,
    device: torch.device,
    report: Path | None = None,
    log: Log = lambda message: None,
) -> dict[str, Any]:
    """The correlated-agents test; writes OUT/correlated.json and a report (default OUT/report)."""
    if len(config.agents) != 1 or config.correlated < 2:
        raise ValueError("the correlated test needs one agent count and --correlated >= 2")
    config = replace(config, archs=("flam",))
    out = Path(out)
    agents = config.agents[0]
    run = _run_counts(out, config, eval_config, device, log)[agents]["flam"]
    verdict = correlated_verdict(run.summary, config.correlated)
    record = {
        "experiment": "correlated",
        "config": asdict(config),
        "eval_config": asdict(eval_config),
        "budget": _budget(config),
        "verdict": verdict,
        "flam": _lite(run.summary),
    }
    write_text(out / "correlated.json", json.dumps(record, indent=2) + "\n")
    write_correlated_report(report or out / "report", run, config, verdict)
    return record


def correlated_verdict(summary: dict[str, Any], correlated: int) -> dict[str, Any]:
    """Which slot holds each agent, and whether the tied agents share one slot while the others have their own."""
    binding = summary.get("binding")
    if not binding:
        return {"applicable": False, "reason": "no slot binding (no ground truth or not a FLAM checkpoint)"}
    dominant = list(binding["dominant_slot"])  # [N]
    tied = dominant[:correlated]
    free = dominant[correlated:]
    pair_shares = len(set(tied)) == 1
    free_own = len(set(free)) == len(free) and not set(free) & set(tied)
    return {
        "applicable": True,
        "dominant_slot": dominant,
        "correlated_agents": list(range(correlated)),
        "correlated_share_one_slot": pair_shares,
        "independent_agents_have_own_slots": free_own,
        "as_in_the_paper": pair_shares and free_own,
    }


def write_correlated_report(out: Path, run: Evaluation, config: ExperimentConfig, verdict: dict[str, Any]) -> Path:
    """Slot–agent mask-share matrix, the verdict, and the full evaluation report beside it."""
    out = Path(out)
    summary = run.summary
    n = len(run.examples.entity_colors)
    names = [f"agent {j}" + (" (tied)" if j < config.correlated else "") for j in range(n)]
    parts = [
        f"# Correlated agents: {config.agents[0]} agents, the first {config.correlated} share actions, "
        f"FLAM with K = {config.n_slots(config.agents[0])}",
        "",
        f"Budget: {_budget(config)}.",
        "",
    ]
    if verdict.get("applicable"):
        share = np.asarray(summary["binding"]["share"], dtype=np.float64)
        marked = [(slot, agent) for agent, slot in enumerate(verdict["dominant_slot"])]
        matrix_figure(
            share,
            out / "binding.png",
            "share of each agent's tokens held by each slot",
            "share",
            run.examples.entity_colors,
            marked,
            names,
        )
        slots = ", ".join(f"{names[j]} → slot {s}" for j, s in enumerate(verdict["dominant_slot"]))
        parts += [
            f"Dominant slot of each agent: {slots}.",
            "",
            f"- the tied agents share one slot: **{verdict['correlated_share_one_slot']}**",
            f"- the independent agents each have a slot of their own: "
            f"**{verdict['independent_agents_have_own_slots']}**",
            f"- as the paper reports (Figure 7): **{verdict['as_in_the_paper']}**",
            "",
            "![slot-agent binding](binding.png)",
            "",
            f"Boxes: each agent's dominant slot. {summary['binding']['rule']}.",
            "",
        ]
    else:
        parts += [f"Not applicable: {verdict['reason']}.", ""]
    write_eval_report(out / "evaluation", [run], "Correlated agents: FLAM evaluation")
    parts.append("- [full evaluation: rollouts, slot masks, DCI, edits](evaluation/README.md)")
    return write_report_page(out, "\n".join(parts) + "\n")
