import ase
import ase.io
import numpy as np
import pytest

from geoae.data import StructureError, StructureFileError, read_structures, structure_files, write_structures

FORMATS = ["xyz", "extxyz", "pdb", "cif", "sdf"]


def molecules() -> list[ase.Atoms]:
    return [
        ase.Atoms("H2O", positions=[[0.0, 0.0, 0.0], [0.76, 0.59, 0.0], [-0.76, 0.59, 0.0]]),
        ase.Atoms("CO2", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 1.16], [0.0, 0.0, -1.16]]),
    ]


@pytest.mark.parametrize("suffix", FORMATS)
def test_write_then_read_round_trips(tmp_path, suffix):
    # ase writes one molecule per sdf file, and multi-model pdb files of one composition only
    images = molecules()[:1] if suffix in ("sdf", "pdb") else molecules()
    path = tmp_path / f"mols.{suffix}"
    write_structures(path, images)
    back = read_structures(path)
    assert len(back) == len(images)
    for data, atoms in zip(back, images):
        assert data.z.tolist() == atoms.get_atomic_numbers().tolist()
        np.testing.assert_allclose(data.pos.numpy(), atoms.get_positions(), atol=1e-3)
    assert back[-1].source == f"{path}[{len(images) - 1}]"


def test_write_leaves_no_temporary_file_and_replaces_atomically(tmp_path):
    path = tmp_path / "out.xyz"
    path.write_text("previous content")
    write_structures(path, molecules())
    assert [p.name for p in tmp_path.iterdir()] == ["out.xyz"]
    assert len(read_structures(path)) == 2


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "out.xyz"
    path.write_text("previous content")
    with pytest.raises(Exception):
        write_structures(path, [object()])
    assert path.read_text() == "previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.xyz"]


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "garbage.xyz"
    path.write_text("this is not\na structure file\n")
    with pytest.raises(StructureFileError, match="garbage.xyz: ASE cannot read"):
        read_structures(path)


def test_missing_file(tmp_path):
    with pytest.raises(StructureFileError, match="no such file"):
        read_structures(tmp_path / "nothing.xyz")


def test_bad_structure_in_multi_structure_file_names_file_and_index(tmp_path):
    path = tmp_path / "two.xyz"
    images = molecules()
    images[1].positions[2] = images[1].positions[0]
    ase.io.write(path, images)
    with pytest.raises(StructureError, match=r"two\.xyz\[1\]: atoms 0 and 2 are at the same position"):
        read_structures(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("nan.xyz", "2\n\nH 0 0 0\nH nan 0 0\n", r"nan\.xyz\[0\]: non-finite coordinates"),
        ("inf.xyz", "2\n\nH 0 0 0\nH inf 0 0\n", r"inf\.xyz\[0\]: non-finite coordinates"),
        ("xx.xyz", "1\n\nXq 0 0 0\n", r"xx\.xyz: ASE cannot read"),  # unknown element
        ("empty.xyz", "0\n\n", r"empty\.xyz(\[0\])?: "),
    ],
)
def test_bad_file_content_names_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(StructureError, match=message):
        read_structures(path)


def test_structure_files_of_a_folder(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ["a.xyz", "b/c.pdb", ".hidden.xyz"]:
        (tmp_path / name).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in structure_files(tmp_path)] == ["a.xyz", "b/c.pdb"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(StructureFileError, match="empty: the folder holds no file"):
        structure_files(tmp_path / "empty")
    with pytest.raises(StructureFileError, match="missing: no such file or folder"):
        structure_files(tmp_path / "missing")
