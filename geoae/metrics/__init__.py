"""Metrics of reconstruction: matched RMSD, bond graphs and stability, per-structure records
and their summaries (used by training, evaluation and benchmarks)."""

from ._bonds import BOND_LENGTHS_PM, BOND_MARGINS_PM, VALENCES, bond_list, bond_orders, stable_atoms
from ._matching import (
    ReconstructionErrors,
    compare_structures,
    matched_rmsd,
    reconstruction_errors,
    reconstruction_summary,
)

__all__ = [
    "BOND_LENGTHS_PM",
    "BOND_MARGINS_PM",
    "VALENCES",
    "ReconstructionErrors",
    "bond_list",
    "bond_orders",
    "compare_structures",
    "matched_rmsd",
    "reconstruction_errors",
    "reconstruction_summary",
    "stable_atoms",
]
