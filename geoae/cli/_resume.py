"""Resuming a run: its checkpoint, and its training log kept whole across the restart."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from geoae._atomic import atomic_path

__all__ = ["keep_training_log", "resume_checkpoint"]

#: lightning's CSV log in a run folder, and where its rows from before a resumed checkpoint
#: wait while the resumed run writes a new one.
LOG, EARLIER_LOG = "metrics.csv", "metrics.csv.earlier"


def resume_checkpoint(resume: str | None) -> str | None:
    """The checkpoint to resume from: ``resume`` itself, or a run folder's ``checkpoints/last.ckpt``."""
    if resume is None:
        return None
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"resume={resume}: no checkpoint at {path}")
    return str(path)


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))  # every column, first seen first
    with atomic_path(path) as tmp, tmp.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


@contextmanager
def keep_training_log(folder: Path, checkpoint: str | None) -> Iterator[None]:
    """Around ``trainer.fit`` of a run writing its log to ``folder/metrics.csv``: when it
    resumes from ``checkpoint`` into the folder of the run it continues, the rows that run
    logged before the checkpoint's step stay in front of the new ones.

    lightning's CSV logger deletes a ``metrics.csv`` it finds (and warns, for any folder not
    empty: hydra's always holds ``.hydra/``; the warning is silenced here). The earlier rows
    wait in ``metrics.csv.earlier`` until the fit returns, so a resumed run that crashes in
    turn loses none of them either; a run that does not resume starts a new log.
    """
    log, earlier = folder / LOG, folder / EARLIER_LOG
    if checkpoint is not None and (log.is_file() or earlier.is_file()):
        step = torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]
        rows = [row for row in _rows(earlier) + _rows(log) if int(row["step"]) < step]
        _write_rows(earlier, rows)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
        yield
    if checkpoint is not None and earlier.is_file():
        _write_rows(log, _rows(earlier) + _rows(log))
        earlier.unlink()
