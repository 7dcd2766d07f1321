"""Training: the loss falls, resume continues exactly, kill -9 loses only the steps since the last checkpoint,
SIGTERM loses none, DDP on two CPU ranks, fine-tuning from a checkpoint, and the CLI's errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from flam.main import main
from flam.models.checkpoint import WEIGHTS_FILE, file_sha256, read_training
from flam.models.evaluation.card import _training_lines as training_lines
from flam.models.model_set import ModelEntry
from flam.models.registry import load_model
from flam.models.train import native_bf16, train_lam, train_tokenizer

FLAM_BIN = [sys.executable, "-m", "flam"]


def quiet(message: str) -> None:
    del message


def tiny_flam_args(tokenizer_dir: Path, data: Path, out: Path) -> list[str]:
    """`train lam` arguments for a tiny FLAM (K = 3) the CLI tests run as a subprocess."""
    return ["train", "lam", "--arch", "flam", "--tokenizer", str(tokenizer_dir), "--data", str(data),
            "--out", str(out), "--preset", "tiny", "--slots", "3", "--action-size", "6"]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(tiny_dataset, out, preset="tiny", steps=3, log=quiet)
    return out


def test_tokenizer_loss_falls(tiny_dataset: Path, tmp_path: Path) -> None:
    train_tokenizer(tiny_dataset, tmp_path / "tok", preset="tiny", steps=60, log=quiet)
    training, _ = read_training(tmp_path / "tok")
    psnrs = [entry["val_psnr"] for entry in training["history"]]
    assert psnrs[-1] > psnrs[0] + 1.0


def test_flam_loss_clearly_falls(tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    train_lam(
        "flam",
        tokenizer_dir,
        tiny_dataset,
        tmp_path / "flam",
        preset="tiny",
        steps=80,
        slots=3,
        action_size=6,
        log=lines.append,
    )
    training, _ = read_training(tmp_path / "flam")
    first, last = training["history"][0], training["history"][-1]
    assert last["step"] == 80
    assert last["val_mse"] < 0.7 * first["val_mse"]
    assert {"binding", "purity"} <= set(last)  # the correspondence score is logged while training
    assert 0 <= last["action_slots"] <= 3  # and how many slots' actions carry information
    assert any(line.startswith("resolved config: ") for line in lines)


@pytest.mark.parametrize("aggregator", ["mixture", "anchored"])
def test_every_aggregator_trains_checkpoints_and_loads(
    aggregator: str, tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    """Through a checkpoint and back: the anchored aggregator's scalar anchor scale included."""
    out = tmp_path / aggregator
    train_lam("flam", tokenizer_dir, tiny_dataset, out, preset="tiny", steps=21, slots=3, action_size=6,
              overrides={"aggregator": aggregator}, log=quiet)  # fmt: skip
    model, _ = load_model(out, ("flam",))
    assert model.config.aggregator == aggregator and read_training(out)[0]["step"] == 21


@pytest.mark.parametrize("bf16", [None, True, False])
def test_bf16_defaults_to_what_the_cpu_computes_natively(bf16: bool | None, tiny_dataset: Path, tmp_path: Path) -> None:
    """Emulated bf16 made training ~8x slower on an AVX2-only CPU, so the default follows the hardware."""
    train_tokenizer(tiny_dataset, tmp_path / "tok", preset="tiny", steps=1, bf16=bf16, log=quiet)
    used = native_bf16(torch.device("cpu")) if bf16 is None else bf16
    training = read_training(tmp_path / "tok")[0]
    assert training["sessions"][-1]["precision"] == ("bf16" if used else "fp32")
    assert training["train_config"]["bf16"] is bf16  # the setting as asked; the session says what it meant here


def test_resume_after_a_crash_continues_exactly(tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    args = dict(preset="tiny", steps=40, slots=3, action_size=6)
    straight = train_lam("monolithic", tokenizer_dir, tiny_dataset, tmp_path / "straight", log=quiet, **args)

    def crash_at_step_40(message: str) -> None:
        if "validation step=40 " in message:  # after step 40's update, before its checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_lam("monolithic", tokenizer_dir, tiny_dataset, tmp_path / "crashed", log=crash_at_step_40, **args)
    assert read_training(tmp_path / "crashed")[0]["step"] == 20  # the last checkpoint survived the crash
    lines: list[str] = []
    resumed = train_lam(
        "monolithic", tokenizer_dir, tiny_dataset, tmp_path / "crashed", resume=True, log=lines.append, **args
    )
    assert any("resumed" in line and "at step 20" in line for line in lines)
    # Provenance: each process start is a session with its own step range and hardware, kept across resumes.
    sessions = read_training(tmp_path / "crashed")[0]["sessions"]
    assert [(s["from_step"], s["to_step"]) for s in sessions] == [(0, 20), (20, 40)]
    assert all(s["device"].startswith("cpu, ") and s["seconds"] > 0 for s in sessions)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_kill_9_loses_only_the_steps_since_the_last_checkpoint(
    tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    command = [*FLAM_BIN, *tiny_flam_args(tokenizer_dir, tiny_dataset, out)]
    process = subprocess.Popen([*command, "--steps", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if (out / "training.json").exists() and json.loads((out / "training.json").read_text())["step"] >= 40:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within two minutes")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    saved = read_training(out)[0]["step"]
    assert saved >= 40 and saved % 20 == 0
    load_model(out, ("flam",))  # whatever moment the kill hit, the folder is a complete checkpoint
    result = subprocess.run(
        [*command, "--steps", str(saved + 10), "--resume"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert f"at step {saved}" in result.stderr
    assert read_training(out)[0]["step"] == saved + 10


def test_sigterm_checkpoints_the_step_in_flight_and_exits_cleanly(
    tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    """`timeout` sends SIGTERM: the run writes a checkpoint at the step it reached, so none is lost."""
    out = tmp_path / "stopped"
    command = [*FLAM_BIN, *tiny_flam_args(tokenizer_dir, tiny_dataset, out), "--steps", "100000"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "training.json").exists():
        assert time.monotonic() < deadline and process.poll() is None, "no first checkpoint within two minutes"
        time.sleep(0.2)
    time.sleep(0.5)  # a few steps past the checkpoint
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    training = read_training(out)[0]
    stopped = training["step"]
    assert f"stopped by SIGTERM at step {stopped} of 100000" in stderr
    assert training["sessions"][-1]["to_step"] == stopped
    load_model(out, ("flam",))


def test_ddp_on_two_cpu_ranks(tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    out, logs = tmp_path / "ddp", tmp_path / "ddp-logs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        # Each rank's whole stdout and stderr to its own file: a rank that dies (a rare SIGABRT was seen once) shows
        # its own traceback below, not only the launcher's summary.
        f"--log-dir={logs}",
        "--redirects=3",
        "-m",
        "flam",
        *tiny_flam_args(tokenizer_dir, tiny_dataset, out),
        "--steps",
        "6",
    ]
    # faulthandler: a rank that aborts prints every thread's Python stack, which says where the abort struck.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    rank_errors = "".join(f.read_text() for f in logs.rglob("stderr.log"))
    if result.returncode != 0 and "terminate called without an active exception" in rank_errors:
        # A known rare abort of a gloo rank at interpreter exit after training finished (root cause not found):
        # launch once more, and say so in the test summary with the rank's own last words.
        warnings.warn(f"a DDP rank aborted at exit; launched again. Its stderr: {rank_errors[-1500:]}", stacklevel=1)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    rank_logs = "".join(f"\n--- {f.relative_to(logs)}\n{f.read_text()[-3000:]}" for f in sorted(logs.rglob("*.log")))
    assert result.returncode == 0, result.stderr[-2000:] + rank_logs
    training, _ = read_training(out)
    assert training["world_size"] == 2 and training["step"] == 6
    data, weights = training["data_digests"], training["weight_digests"]
    assert data[0] != data[1]  # each rank drew its own clips
    assert weights[0] == weights[1]  # and DDP kept the replicas identical


def test_cli_errors_are_one_line(
    tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "lam", "--arch", "flam", "--tokenizer", str(tokenizer_dir), "--preset", "tiny"]
    assert main([*base, "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a dataset folder" in capsys.readouterr().err
    assert main([*base, "--data", str(tiny_dataset), "--out", str(tmp_path / "o"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    shutil.copytree(tokenizer_dir, occupied)
    assert main([*base, "--data", str(tiny_dataset), "--out", str(occupied)]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    bad_tokenizer = [
        "train",
        "lam",
        "--arch",
        "flam",
        "--tokenizer",
        str(tmp_path),
        "--data",
        str(tiny_dataset),
        "--out",
        str(tmp_path / "o2"),
    ]
    assert main(bad_tokenizer) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    assert main([*base, "--data", str(tiny_dataset), "--out", str(tmp_path / "o3"), "--set", "nonsense=1"]) == 2
    assert "unknown model option" in capsys.readouterr().err
    wrong_types = {"split_every=abc": 'split_every: takes a whole number, got "abc"',
                   "factorizer.query_offsets=1": "factorizer.query_offsets: takes true or false, got 1"}  # fmt: skip
    for option, says in wrong_types.items():
        assert main([*base, "--data", str(tiny_dataset), "--out", str(tmp_path / "o5"), "--set", option]) == 2
        assert f"--set {says}" in capsys.readouterr().err
    wrong_levels = ["--set", "factorizer.code_levels=[5,5,3]"]  # the tiny tokenizer's are 5, 5, 5
    assert main([*base, "--data", str(tiny_dataset), "--out", str(tmp_path / "o4"), *wrong_levels]) == 2
    assert "does not match the tokenizer's FSQ levels [5, 5, 5]" in capsys.readouterr().err
    assert not (tmp_path / "o4").exists()


def test_code_embedding_trains_and_reloads(tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "coded"
    argv = ["train", "lam", "--arch", "flam", "--tokenizer", str(tokenizer_dir), "--preset", "tiny", "--steps", "2",
            "--data", str(tiny_dataset), "--out", str(out), "--set", "factorizer.code_levels=[5,5,5]"]  # fmt: skip
    assert main(argv) == 0
    model, header = load_model(out, ("flam",))
    assert model.factorizer.config.code_levels == (5, 5, 5) and header["config"]["factorizer"]["code_levels"] == [5] * 3
    assert model.factorizer.code_embed.weight.shape[0] == 125


def test_slot_split_checks_are_recorded_and_survive_a_resume(
    tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "split"
    # A ratio of 1 splits at every check that finds an action slot and an idle one; a tiny run may have neither.
    # split_every needs query offsets: the options are validated together, so it may come first.
    split = ["--set", "split_every=2", "--set", "factorizer.query_offsets=true", "--set", "split_ratio=1"]
    argv = tiny_flam_args(tokenizer_dir, tiny_dataset, out) + split
    assert main(argv + ["--steps", "4"]) == 0
    events = read_training(out)[0]["events"]
    assert [e["step"] for e in events] == [2, 4]
    for event in events:
        assert len(event["rates"]) == len(event["masses"]) == 3
        if "split" in event:
            assert event["rates"][event["split"]] >= 0.5 > event["rates"][event["into"]]
    assert main(argv + ["--steps", "6", "--resume"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert [e["step"] for e in record["events"]] == [2, 4, 6]
    # The model card lists the splits (a tiny run's slots may all carry actions, so none was needed here: add one)
    record["events"][1] |= {"split": 0, "into": 2}
    (out / "training.json").write_text(json.dumps(record))
    assert "slot splits (crowded slot into idle slot): step 4: 0 into 2" in "\n".join(training_lines("flam", out))


def test_fine_tuning_starts_from_a_checkpoint_with_changed_costs(
    tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source"
    train_lam("flam", tokenizer_dir, tiny_dataset, source, preset="tiny", steps=20, slots=3, action_size=6, log=quiet)
    trained, _ = load_model(source, ("flam",))
    tuned = tmp_path / "tuned"

    def fine_tune(
        out: Path, *extra: str, arch: str = "flam", tokenizer: Path = tokenizer_dir, init: Path = source
    ) -> list[str]:
        # K and the action size come from --init; a learning rate this small leaves the weights where they started.
        return ["train", "lam", "--arch", arch, "--tokenizer", str(tokenizer), "--data", str(tiny_dataset),
                "--preset", "tiny", "--init", str(init), "--out", str(out), "--steps", "4", "--lr", "1e-12",
                "--set", "impurity_cost=0.01", *extra]  # fmt: skip

    assert main(fine_tune(tuned)) == 0
    model, header = load_model(tuned, ("flam",))
    assert header["config"]["impurity_cost"] == 0.01
    assert header["config"]["factorizer"]["n_slots"] == 3
    for name, weight in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], weight, atol=1e-6, rtol=0, msg=name)
    # The new cost's warm-up counts from the fine-tuning's first step: the source had no scheduled cost.
    assert int(model.steps_trained) == 4
    training = read_training(tuned)[0]
    assert training["step"] == 4 and training["train_config"]["lr"] == 1e-12
    assert training["init"]["step"] == 20 and training["init"]["sessions"][0]["to_step"] == 20
    assert training["init"]["weights_sha256"] == file_sha256(source / WEIGHTS_FILE)
    capsys.readouterr()
    # Resuming needs the same starting weights.
    assert main(fine_tune(tuned, "--steps", "6", "--resume")) == 0
    assert read_training(tuned)[0]["step"] == 6
    from_scratch = [a for a in fine_tune(tuned, "--steps", "8", "--resume") if a not in ("--init", str(source))]
    assert main([*from_scratch, "--slots", "3", "--action-size", "6"]) == 2
    assert "started from other weights" in capsys.readouterr().err
    # A part the source lacks (a background sink's query) starts from its initialisation and is recorded.
    sink = tmp_path / "sink"
    assert main(fine_tune(sink, "--set", "factorizer.background_sink=true")) == 0
    assert read_training(sink)[0]["init"]["fresh_weights"] == ["factorizer.sink_query"]
    assert read_training(tuned)[0]["init"]["fresh_weights"] == []
    card = "\n".join(training_lines("flam", sink))  # the model card's training section names where it started
    assert f"started from the weights of `{source}`" in card and "initialisation: factorizer.sink_query" in card
    # Fine-tuning a fine-tuned model keeps the whole chain.
    chained = tmp_path / "chained"
    assert main(fine_tune(chained, init=tuned)) == 0
    assert read_training(chained)[0]["init"]["init"]["weights_sha256"] == file_sha256(source / WEIGHTS_FILE)
    card = "\n".join(training_lines("flam", chained))
    assert f"weights of `{tuned}`" in card and f"weights of `{source}`" in card
    assert "in all, with the runs it was fine-tuned from: 30 steps" in card  # 4 + 6 + 20
    summary = ModelEntry("set/chained", chained, "flam", None).training()  # what GET /models shows of it
    assert [run["steps"] for run in summary["fine_tuned_from"]] == [6, 20] and summary["total_steps"] == 4 + 6 + 20
    assert summary["total_seconds"] >= summary["seconds"] > 0
    # Every other mismatch is a one-line error before any training, and leaves nothing behind.
    other_tokenizer = tmp_path / "other-tokenizer"
    train_tokenizer(tiny_dataset, other_tokenizer, preset="tiny", steps=1, log=quiet)
    errors = {
        "slots": (fine_tune(tmp_path / "e1", "--slots", "3"), "leave out --slots"),
        "lr": (fine_tune(tmp_path / "e2", "--lr", "0"), "--lr must be a positive number"),
        "arch": (fine_tune(tmp_path / "e3", arch="monolithic"), "expected monolithic"),
        "tokenizer": (fine_tune(tmp_path / "e4", tokenizer=other_tokenizer), "trained on another tokenizer"),
        "dropped part": (
            fine_tune(tmp_path / "e5", "--set", "factorizer.background_sink=false", init=sink),
            "no place for its weights factorizer.sink_query",
        ),
    }
    for case, (argv, message) in errors.items():
        assert main(argv) == 2, case
        assert message in capsys.readouterr().err, case
        assert not Path(argv[argv.index("--out") + 1]).exists(), case
    assert main(fine_tune(source, "--resume")) == 2
    assert "use --resume instead" in capsys.readouterr().err


def test_lr_and_seed_reach_both_stages(tiny_dataset: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    """--lr and --seed are recorded in the run's train config; another seed gives other initial weights and clips,
    the same seed the same run."""
    tok = ["train", "tokenizer", "--data", str(tiny_dataset), "--preset", "tiny", "--steps", "2", "--lr", "5e-4"]
    assert main([*tok, "--seed", "3", "--out", str(tmp_path / "tok")]) == 0
    config = read_training(tmp_path / "tok")[0]["train_config"]
    assert (config["lr"], config["seed"]) == (5e-4, 3)
    lam = [
        a
        for a in tiny_flam_args(tokenizer_dir, tiny_dataset, tmp_path / "x")
        if a not in ("--out", str(tmp_path / "x"))
    ]
    runs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert main([*lam, "--steps", "2", "--lr", "1e-3", "--seed", seed, "--out", str(tmp_path / name)]) == 0
        runs[name] = load_model(tmp_path / name, ("flam",))[0].state_dict()
        assert read_training(tmp_path / name)[0]["train_config"]["seed"] == int(seed)
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])
