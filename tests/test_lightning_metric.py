"""fastdice's torchmetrics DiceScore in a real Lightning loop: examples/lightning_dice_metric.py
run as a user runs it (one process, and DDP with two processes on gloo), the logged
per-epoch values checked against torchmetrics' own DiceScore on the same predictions.

About 12 s (one process) and 25 s (two processes) on a 2-core machine, mostly
interpreter and Lightning start-up.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
torchmetrics_segmentation = pytest.importorskip("torchmetrics.segmentation")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lightning_dice_metric.py"
EPOCHS = 2


def _run_example(record_dir: Path, devices: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--devices", str(devices), "--epochs", str(EPOCHS), "--record", str(record_dir)],
        env=env, capture_output=True, text=True, timeout=300, cwd=str(record_dir),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(record_dir / "csv" / "version_0" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/dice")]
    return {int(row["epoch"]): float(row["val/dice"]) for row in rows}


def _torchmetrics_dice(parts) -> float:
    """torchmetrics' own DiceScore, the example's arguments, over the given (logits, labels)."""
    oracle = torchmetrics_segmentation.DiceScore(num_classes=3, include_background=False, input_format="mixed")
    for part in parts:
        oracle.update(part["logits"], part["labels"])
    return float(oracle.compute())


def _check(record_dir: Path, logged: dict, world: int) -> None:
    assert sorted(logged) == list(range(EPOCHS)), logged
    per_epoch = {
        epoch: [torch.load(record_dir / f"val_epoch{epoch}_rank{rank}.pt") for rank in range(world)]
        for epoch in range(EPOCHS)
    }
    # 12 validation images in all, each seen once per epoch over the ranks.
    assert all(sum(p["labels"].shape[0] for p in parts) == 12 for parts in per_epoch.values())
    for epoch, parts in per_epoch.items():
        # The whole-set value of this epoch, over every rank's predictions: the metric was
        # synced over the ranks and reset after the previous epoch.
        assert logged[epoch] == pytest.approx(_torchmetrics_dice(parts), rel=1e-6, abs=1e-7), epoch
        if world > 1:
            assert logged[epoch] != pytest.approx(_torchmetrics_dice(parts[:1]), rel=1e-6), "not synced over ranks"
    # Not reset, the second epoch would hold both epochs' predictions.
    both = [p for parts in per_epoch.values() for p in parts]
    assert logged[1] != pytest.approx(_torchmetrics_dice(both), rel=1e-6)


def test_example_logs_whole_set_dice_each_epoch(tmp_path):
    logged = _run_example(tmp_path, devices=1)
    _check(tmp_path, logged, world=1)


def test_example_ddp_two_processes_logs_synced_dice(tmp_path):
    logged = _run_example(tmp_path, devices=2)
    _check(tmp_path, logged, world=2)
