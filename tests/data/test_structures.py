import ase
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from geoae.data import StructureError, check_structure, from_atoms, to_atoms


def water() -> ase.Atoms:
    return ase.Atoms("H2O", positions=[[0.0, 0.0, 0.0], [0.76, 0.59, 0.0], [-0.76, 0.59, 0.0]])


def test_round_trip_through_atoms():
    atoms = water()
    data = from_atoms(atoms)
    assert data.pos.dtype == torch.float32 and data.z.dtype == torch.long
    (back,) = to_atoms(data)
    assert back.get_chemical_symbols() == atoms.get_chemical_symbols()
    np.testing.assert_allclose(back.get_positions(), atoms.get_positions(), atol=1e-6)


def test_batch_splits_back_into_structures():
    batch = Batch.from_data_list([from_atoms(water()), from_atoms(ase.Atoms("N2", positions=[[0, 0, 0], [0, 0, 1.1]]))])
    out = to_atoms(batch)
    assert [a.get_chemical_formula() for a in out] == ["H2O", "N2"]
    assert [a.info["name"] for a in out] == ["H2O", "N2"]


@pytest.mark.parametrize(
    "pos, z, message",
    [
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "empty structure"),
        (torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0]]), torch.tensor([1, 1]), "non-finite coordinates"),
        (torch.tensor([[0.0, 0, 0], [float("inf"), 0, 0]]), torch.tensor([1, 1]), "non-finite coordinates"),
        (torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 0, 0]]), torch.tensor([1, 1, 1]), "atoms 0 and 2 are at the same position"),
        (torch.zeros(1, 3), torch.tensor([0]), "unknown atomic numbers [0]"),
        (torch.zeros(1, 3), torch.tensor([500]), "unknown atomic numbers [500]"),
        (torch.zeros(2, 3), torch.tensor([1]), "2 positions but 1 atomic numbers"),
    ],
)
def test_bad_structures_name_source_and_problem(pos, z, message):
    with pytest.raises(StructureError) as error:
        check_structure(pos, z, source="mol.xyz[4]")
    assert str(error.value).startswith("mol.xyz[4]: ")
    assert message in str(error.value)
