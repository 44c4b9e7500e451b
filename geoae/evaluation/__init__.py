"""Evaluations run after training (their figures go to the run's metrics.json)."""

from ._tetris import equivariance_errors, evaluate_tetris

__all__ = ["equivariance_errors", "evaluate_tetris"]
