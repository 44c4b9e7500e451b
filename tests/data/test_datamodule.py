import ase
import ase.io
import pytest

from geoae.data import FileDataModule, StructureError


def write_molecules(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        atoms = ase.Atoms("CH4", positions=[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63 - 0.01 * i]])
        ase.io.write(folder / f"mol{i:02d}.xyz", atoms)


def test_file_datamodule_splits_a_folder(tmp_path):
    write_molecules(tmp_path / "mols", 10)
    dm = FileDataModule(tmp_path / "mols", species=[1, 6], max_atoms=5, val_fraction=0.2, test_fraction=0.1, batch_size=4)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (7, 2, 1)
    sources = {d.source for d in dm.train_set + dm.val_set + dm.test_set}
    assert len(sources) == 10
    batch = next(iter(dm.train_dataloader()))
    assert batch.pos.shape == (20, 3)


def test_unconfigured_species_names_the_structure(tmp_path):
    write_molecules(tmp_path / "mols", 2)
    with pytest.raises(StructureError, match=r"mol0\d\.xyz\[0\]: atomic numbers \[6\] are not among the configured species \[1, 7, 8\]"):
        FileDataModule(tmp_path / "mols", species=[1, 7, 8], max_atoms=5)


def test_unreadable_file_in_folder_names_it(tmp_path):
    write_molecules(tmp_path / "mols", 2)
    (tmp_path / "mols" / "notes.txt").write_text("not a molecule")
    with pytest.raises(StructureError, match="notes.txt: ASE cannot read"):
        FileDataModule(tmp_path / "mols", species=[1, 6], max_atoms=5)


def test_structure_larger_than_max_atoms_names_it(tmp_path):
    write_molecules(tmp_path / "mols", 1)
    with pytest.raises(StructureError, match=r"mol00\.xyz\[0\]: 5 atoms, more than max_atoms=4"):
        FileDataModule(tmp_path / "mols", species=[1, 6], max_atoms=4)
