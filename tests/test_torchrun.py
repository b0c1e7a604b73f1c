"""torchrun end to end: each train command, then a resume, run as 2 processes (gloo, CPU) through the cnnmrf console
script (``torchrun --standalone --nproc-per-node 2 $(which cnnmrf) train-detector ...``). Every launch must end cleanly
on both ranks, rank 0 alone reporting and writing the run's files once, and the ranks must hold the same weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from cnnmrf.models.checkpoint import load_checkpoint, model_from_checkpoint

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this PyTorch build has no torch.distributed with the gloo backend",
)

# The processes torchrun starts (they have RANK; torchrun itself has not) import this before the console script runs:
# it hands loop.train an on_epoch_end that saves each rank's weights beside the run folder, and saves the weights a
# fresh run starts from. The command line itself is run unchanged.
RANK_WEIGHTS = """
import inspect
import os
from pathlib import Path

if "RANK" in os.environ:
    import torch

    import cnnmrf.training.loop as loop

    rank, train, initial_model = os.environ["RANK"], loop.train, loop._initial_model

    def train_saving_each_rank(*args, **kwargs):
        out = Path(inspect.signature(train).bind(*args, **kwargs).arguments["out"])

        def save(epoch, model):
            torch.save({"epoch": epoch, "state": model.state_dict()}, out.parent / f"{out.name}.rank{rank}.pt")

        def initial_saved(*args, **kwargs):
            model = initial_model(*args, **kwargs)
            torch.save(model.state_dict(), out.parent / f"{out.name}.init{rank}.pt")
            return model

        loop._initial_model = initial_saved
        return train(*args, **kwargs, on_epoch_end=save)

    loop.train = train_saving_each_rank
"""
FAST = ("--batch-size", "1", "--max-steps", "2", "--workers", "0", "--device", "cpu")


def beside_python(name: str) -> str | None:
    """The executable ``name`` installed with this interpreter (the venv's bin folder), else the one on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``launch(folder, *args)``: ``torchrun --standalone --nproc-per-node 2 <cnnmrf script> ARGS`` run in ``folder``
    with the rank-weights hook (OMP_NUM_THREADS=1); returns the finished process."""
    script = beside_python("cnnmrf")
    if script is None:
        pytest.skip("the cnnmrf console script is not installed (pip install -e .)")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    hook = tmp_path_factory.mktemp("rank_weights_hook")
    (hook / "sitecustomize.py").write_text(textwrap.dedent(RANK_WEIGHTS))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")])))

    def run(folder: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
        command = [*launcher, "--standalone", "--nproc-per-node", "2", script, *map(str, args)]
        return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=180)

    return run


def check_launch(done: subprocess.CompletedProcess[str], run: Path, epochs: int, batches: int) -> dict[str, Any]:
    """Both ranks ended cleanly, rank 0 alone reported and wrote the run's files once (``epochs`` in all), and the
    ranks hold the same weights, which are rank 0's last.pt, their BatchNorms having seen ``batches`` batches each.

    Returns:
        last.pt.
    """
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Grad strides do not match" not in done.stderr, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert sum(line.startswith(("precision ", "done: ")) for line in lines) == 2, done.stdout  # one of each
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "last.pt", "metrics.jsonl"]  # no lock, no temporary
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in history] == list(range(1, epochs + 1))
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == epochs - 1 and state["history"] == history
    ranks = [torch.load(run.parent / f"{run.name}.rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["epoch"] for r in ranks] == [epochs, epochs]
    params = [name for name, _ in model_from_checkpoint(state).named_parameters()]
    for name in params:
        assert torch.isfinite(state["model"][name]).all(), name
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), f"{name} differs between the ranks"
        assert torch.equal(state["model"][name], ranks[0]["state"][name]), f"{name}: last.pt is not rank 0's"
    # BatchNorm running statistics are each rank's own under DDP (no SyncBatchNorm); their batch counts agree.
    counts = [name for name in ranks[0]["state"] if name.endswith("num_batches_tracked")]
    assert counts and all(ranks[0]["state"][n].item() == ranks[1]["state"][n].item() == batches for n in counts)
    return state


def changed(state: dict[str, Any], start: dict[str, torch.Tensor], prefix: str) -> list[bool]:
    """Whether each parameter under ``prefix`` differs from ``start``."""
    params = [name for name, _ in model_from_checkpoint(state).named_parameters() if name.startswith(prefix)]
    assert params, prefix
    return [not torch.equal(state["model"][name], start[name]) for name in params]


def test_the_three_train_commands_and_a_resume_run_under_torchrun(launch: Any, tiny_h5: Path, tmp_path: Path) -> None:
    det, mrf, joint = tmp_path / "det", tmp_path / "mrf", tmp_path / "joint"
    common = (tiny_h5, *FAST, "--precision", "fp32")

    done = launch(tmp_path, "train-detector", *common, "--preset", "tiny", "--out", det, "--epochs", "1")
    detector = check_launch(done, det, epochs=1, batches=2)
    assert all(changed(detector, torch.load(tmp_path / "det.init0.pt", weights_only=True), "detector."))

    done = launch(tmp_path, "train-mrf", *common, "--detector", det / "best.pt", "--out", mrf, "--epochs", "1")
    spatial = check_launch(done, mrf, epochs=1, batches=2)  # the detector's 2: frozen, BatchNorm statistics included
    assert not any(changed(spatial, detector["model"], "detector."))
    assert all(changed(spatial, torch.load(tmp_path / "mrf.init0.pt", weights_only=True), "spatial."))

    done = launch(tmp_path, "train-joint", *common, "--mrf", mrf / "best.pt", "--out", joint, "--epochs", "1")
    both = check_launch(done, joint, epochs=1, batches=4)
    assert all(changed(both, spatial["model"], "spatial.")) and any(changed(both, spatial["model"], "detector."))

    # --resume continues the detector run for a second epoch; in bf16, so that the detector is channels_last under DDP
    # (the gradient buckets must follow that layout: the check above refuses "Grad strides do not match").
    done = launch(tmp_path, "train-detector", tiny_h5, "--out", det, "--resume", "--epochs", "2", "--precision", "bf16")
    resumed = check_launch(done, det, epochs=2, batches=4)
    assert resumed["history"][0] == detector["history"][0] and resumed["history"][1]["precision"] == "bf16"
    assert all(changed(resumed, detector["model"], "detector."))
