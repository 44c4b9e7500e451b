"""Metrics of reconstruction."""

from ._matching import ReconstructionErrors, matched_rmsd, reconstruction_errors

__all__ = ["ReconstructionErrors", "matched_rmsd", "reconstruction_errors"]
