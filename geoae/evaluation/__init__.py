"""Evaluations run after training (their figures go to the run's metrics.json)."""

from ._levels import free_running_level_errors, level_errors
from ._molecules import evaluate_molecules, reconstruct_molecules, write_molecule_report
from ._tetris import equivariance_errors, evaluate_tetris

__all__ = [
    "equivariance_errors",
    "evaluate_molecules",
    "free_running_level_errors",
    "evaluate_tetris",
    "level_errors",
    "reconstruct_molecules",
    "write_molecule_report",
]
