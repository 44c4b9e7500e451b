"""A resumed run's training log keeps the rows logged before its checkpoint, through crashes."""

import csv

import pytest
import torch

from geoae.cli._resume import keep_training_log, resume_checkpoint


def write_log(path, steps):
    """What lightning's CSV logger does: delete the log it finds, write its own rows."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["epoch", "step", "train/loss"])
        writer.writeheader()
        writer.writerows({"epoch": 0, "step": s, "train/loss": 1.0 / (s + 1)} for s in steps)


def logged_steps(path):
    with path.open(newline="") as file:
        return [int(row["step"]) for row in csv.DictReader(file)]


def checkpoint(folder, step):
    path = folder / f"step{step}.ckpt"
    torch.save({"global_step": step}, path)
    return str(path)


def test_rows_before_the_checkpoint_survive_a_resumed_run_that_crashes_in_turn(tmp_path):
    log = tmp_path / "metrics.csv"
    write_log(log, range(6))  # the first run logged steps 0-5, its last checkpoint at step 3
    with pytest.raises(RuntimeError), keep_training_log(tmp_path, checkpoint(tmp_path, 3)):
        write_log(log, [3, 4])
        raise RuntimeError("the machine went away again")
    assert logged_steps(tmp_path / "metrics.csv.earlier") == [0, 1, 2]
    with keep_training_log(tmp_path, checkpoint(tmp_path, 4)):  # resumed from step 4 this time
        write_log(log, [4, 5, 6])
    assert logged_steps(log) == list(range(7))
    assert not (tmp_path / "metrics.csv.earlier").exists()


def test_a_run_that_does_not_resume_starts_a_new_log(tmp_path):
    log = tmp_path / "metrics.csv"
    write_log(log, range(6))
    with keep_training_log(tmp_path, None):
        write_log(log, [0, 1])
    assert logged_steps(log) == [0, 1]


def test_resume_names_the_missing_checkpoint(tmp_path):
    assert resume_checkpoint(None) is None
    (tmp_path / "checkpoints").mkdir()
    torch.save({"global_step": 1}, tmp_path / "checkpoints/last.ckpt")
    assert resume_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoints/last.ckpt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        resume_checkpoint(str(tmp_path / "nowhere"))
