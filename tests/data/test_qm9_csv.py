"""QM9's CSV files in qm9pack's format: finding them, parsing them, naming the row that is wrong."""

import pytest
import torch

from geoae.data import QM9_PROPERTIES, StructureFileError, qm9_csv_files, read_qm9_csv
from tests.utils.qm9 import HEADER, row, write_csv


def test_parses_every_molecule_sorted_by_index(csv_files):
    qm9 = read_qm9_csv(csv_files)
    assert qm9["index"].tolist() == [1, 4, 10, 11, 12, 13, 14, 15, 16, 184]
    assert qm9["ptr"].diff().tolist() == [5, 4, 3, 3, 9, 3, 3, 3, 3, 5]
    assert qm9["pos"].shape == (41, 3) and qm9["pos"].dtype == torch.float32 and qm9["z"].shape == (41,)
    assert qm9["z"][:9].tolist() == [6, 1, 1, 1, 1, 6, 6, 1, 1]  # hydrogens kept
    assert qm9["z"][-5:].tolist() == [9, 6, 9, 9, 9]
    # "0." and "1." are numbers
    assert torch.equal(qm9["pos"][5:9, 1:], torch.tensor([[0.0, 1.0]] * 4))
    assert qm9["pos"][0].tolist() == pytest.approx([-0.0126981359, 1.0858041578, 0.0080009958])
    assert qm9["smiles"][:2] == ["C", "C#C"] and qm9["smiles"][-1] == "FC(F)(F)F"
    assert qm9["property_names"] == list(QM9_PROPERTIES) and qm9["properties"].shape == (10, 15)
    assert qm9["properties"].dtype == torch.float64
    assert qm9["properties"][0, QM9_PROPERTIES.index("InternalEnergy_0K_au")] == -40.47893
    assert qm9["properties"][1, 0] == 0.0


@pytest.mark.parametrize(
    "bad_row, message",
    [
        (row(20, "OHH")[:-4], r"line 3: 24 fields, the header has 25"),
        (row(20, "OHH", num_atoms=4), r"line 3: 3 elements but N_atoms=4"),
        (row(20, "OXH"), r"line 3: unknown element in \['O','X','H'\]"),
        (row(20, "OH", xyz="[[1,2,3],[4,5]]"), r"line 3: XYZ_Ang is not a list of 2 \[x, y, z\] positions"),
        (row(20, "OH", xyz="[[1,2,3],[4,5,six]]"), r"line 3: XYZ_Ang \[\[1,2,3\],\[4,5,six\]\] is not a list of 2"),
        (row(20, "OH", xyz="[[1,2,3],[4,5,]]"), r"line 3: XYZ_Ang \[\[1,2,3\],\[4,5,\]\] is not a list of 2"),
        (row(20, "OH", xyz="[[1,2,3],[4,5,nan]]"), r"line 3: non-finite XYZ_Ang"),
        (row(20, "OH", prop="abc"), r"line 3: RotA_GHz 'abc' is not a number"),
        (row(20, "OH").replace(",20,", ",2.5,", 1), r"line 3: Index '2.5' is not an integer"),
        (row(10, "OH"), r"bad\.csv, line 3: Index 10 already used at .*good\.csv, line 2"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_row, message):
    good = write_csv(tmp_path / "good.csv", [row(10, "OHH")])
    bad = write_csv(tmp_path / "bad.csv", [row(21, "OHH"), bad_row, row(22, "OHH")])
    with pytest.raises(StructureFileError, match=r"bad\.csv, " + message if "bad" not in message else message):
        read_qm9_csv([good, bad])


def test_not_a_qm9_csv_names_the_file(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(StructureFileError, match=r"other\.csv: not a QM9 CSV file, the header lacks the columns \['Index'"):
        read_qm9_csv([path])


def test_csv_files_are_found_without_importing_qm9pack(csv_files, tmp_path, monkeypatch):
    package = tmp_path / "site" / "qm9pack"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('qm9pack must not be imported')\n")
    for i in (1, 2, 3):
        (package / "data" / f"qm9_part{i}.csv").write_text(HEADER + "\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert [p.relative_to(package).as_posix() for p in qm9_csv_files()] == [f"data/qm9_part{i}.csv" for i in (1, 2, 3)]
