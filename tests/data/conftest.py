import pytest

from tests.utils.qm9 import CH4, C2H2, CF4, row, write_csv


@pytest.fixture
def csv_files(tmp_path):
    """10 molecules in 2 files, out of QM9-index order; 184 has fluorine, 12 has 9 atoms."""
    first = write_csv(tmp_path / "qm9_part1.csv", [C2H2, CH4, row(10, "OHH", "O"), row(12, "CCOHHHHHH", "CCO"), row(14, "NHH")])
    second = write_csv(tmp_path / "qm9_part2.csv", [CF4] + [row(i, "OHH", "O") for i in (11, 13, 15, 16)])
    return [first, second]
