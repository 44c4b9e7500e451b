"""QM9 from CSV files in qm9pack's format: parsing, caching, the fixed split, the lazy
dataset and the data module. Only the last test needs qm9pack (a test dependency; skipped without it)."""

import importlib.util

import pytest
import torch
from torch_geometric.loader import DataLoader

import geoae.data._qm9 as qm9_module
from geoae.data import (
    QM9_PROPERTIES,
    QM9DataModule,
    QM9Dataset,
    StructureError,
    StructureFileError,
    load_qm9,
    qm9_csv_files,
    qm9_split,
    read_qm9_csv,
)

HEADER = (
    "XYZ_file,Index,SMILES,InChi,N_atoms,Stoichiometry,Elements,XYZ_Ang,Mulliken_pop,Harmonic_Freq_cmi,"
    "RotA_GHz,RotB_GHz,RotC_GHz,Dipole_debye,Polarizability_bohr3,HOMO_au,LUMO_au,HOMO_LUMO_gap_au,R2_bohr2,"
    "ZPVE_au,InternalEnergy_0K_au,InternalEnergy_298K_au,Enthalphy_298K_au,GibbsFreeEnergy_298K_au,"
    "Heatcapacity_Cv_cal_mol_K"
)
# Rows 1, 4 (numbers written "0." and "1.") and 184 (fluorine) of qm9pack's qm9_part1.csv, verbatim.
CH4 = (
    '"dsgdb9nsd_000001.xyz",1,"C","InChI=1S/CH4/h1H4",5,"[4,1,0,0,0]","[\'C\',\'H\',\'H\',\'H\',\'H\']",'
    '"[[-0.0126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,0.0019761204],'
    "[1.0117308433,1.4637511618,0.0002765748],[-0.540815069,1.4475266138,-0.8766437152],"
    '[-0.5238136345,1.4379326443,0.9063972942]]","[-0.535689,0.133921,0.133922,0.133923,0.133923]",'
    '"[1341.307,1341.3284,1341.365,1562.6731,1562.7453,3038.3205,3151.6034,3151.6788,3151.7078]",'
    "157.7118,157.70997,157.70699,0.,13.21,-0.3877,0.1171,0.5048,35.3641,0.044749,-40.47893,-40.476062,"
    "-40.475117,-40.498597,6.469"
)
C2H2 = (
    '"dsgdb9nsd_000004.xyz",4,"C#C","InChI=1S/C2H2/c1-2/h1-2H",4,"[2,2,0,0,0]","[\'C\',\'C\',\'H\',\'H\']",'
    '"[[0.5995394918,0.,1.],[-0.5995394918,0.,1.],[-1.6616385861,0.,1.],[1.6616385861,0.,1.]]",'
    '"[-0.207019,-0.207019,0.207019,0.207019]","[549.7648,549.7648,795.2713,795.2713,2078.1131,3455.8096,3557.8599]",'
    "0.,35.6100361,35.6100361,0.,16.28,-0.2845,0.0506,0.3351,59.5248,0.026841,-77.308427,-77.305527,-77.304583,"
    "-77.327429,8.574"
)
CF4 = (
    '"dsgdb9nsd_000184.xyz",184,"FC(F)(F)F","InChI=1S/CF4/c2-1(3,4)5",5,"[0,1,0,0,4]","[\'F\',\'C\',\'F\',\'F\',\'F\']",'
    '"[[0.0010921821,0.0735451051,0.0024996288],[-0.0168887554,1.3947684349,0.009692655],'
    "[1.2227713731,1.8522134169,0.0003138912],[-0.6559701536,1.8325027456,-1.0609125843],"
    '[-0.6354026161,1.8208575876,1.0969063093]]","[-0.063897,0.255845,-0.063938,-0.064034,-0.063976]",'
    '"[429.729,430.4483,625.9373,626.1957,626.5807,914.9479,1290.7011,1290.8863,1291.31]",'
    "5.71326,5.71279,5.71267,0.0003,15.93,-0.4286,0.1935,0.6221,279.3208,0.017147,-437.484875,-437.480956,"
    "-437.480011,-437.512059,12.639"
)


def row(index, symbols, smiles="C", xyz=None, num_atoms=None, prop="1.5"):
    """A row in qm9pack's format: atoms on a line, 1 angstrom apart, every property ``prop``."""
    xyz = xyz or "[" + ",".join(f"[{i}.25,0.5,-{i}.]" for i in range(len(symbols))) + "]"
    elements = "[" + ",".join(f"'{s}'" for s in symbols) + "]"
    return (
        f'"dsgdb9nsd_{index:06d}.xyz",{index},"{smiles}","InChI=1S/x",{num_atoms or len(symbols)},"[0,0,0,0,0]",'
        f'"{elements}","{xyz}","[0.1]","[100.5]",' + ",".join([prop] * len(QM9_PROPERTIES))
    )


def write_csv(path, rows):
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


@pytest.fixture
def csv_files(tmp_path):
    """10 molecules in 2 files, out of QM9-index order; 184 has fluorine, 12 has 9 atoms."""
    first = write_csv(tmp_path / "qm9_part1.csv", [C2H2, CH4, row(10, "OHH", "O"), row(12, "CCOHHHHHH", "CCO"), row(14, "NHH")])
    second = write_csv(tmp_path / "qm9_part2.csv", [CF4] + [row(i, "OHH", "O") for i in (11, 13, 15, 16)])
    return [first, second]


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


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def test_second_load_reads_the_cache_without_parsing(csv_files, tmp_path, monkeypatch):
    first = load_qm9(tmp_path / "cache", files=csv_files)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [p.name for p in (tmp_path / "cache").glob("qm9-v1-*.pt")]
    monkeypatch.setattr(qm9_module, "read_qm9_csv", lambda files: pytest.fail("parsed again"))
    assert same(load_qm9(tmp_path / "cache", files=csv_files), first)


def test_cache_folder_from_environment(csv_files, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOAE_CACHE", str(tmp_path / "env"))
    load_qm9(files=csv_files)
    assert len(list((tmp_path / "env").glob("qm9-v1-*.pt"))) == 1


def test_cache_is_written_atomically(csv_files, tmp_path, monkeypatch):
    def crash(obj, path):
        open(path, "wb").write(b"half a cache")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        load_qm9(tmp_path / "cache", files=csv_files)
    assert list((tmp_path / "cache").iterdir()) == []  # neither a cache nor a temporary file
    monkeypatch.undo()
    assert same(load_qm9(tmp_path / "cache", files=csv_files), read_qm9_csv(csv_files))


def test_unreadable_cache_is_parsed_again(csv_files, tmp_path):
    load_qm9(tmp_path, files=csv_files)
    (cache,) = tmp_path.glob("qm9-v1-*.pt")
    cache.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="cannot read the cache"):
        assert same(load_qm9(tmp_path, files=csv_files), read_qm9_csv(csv_files))


def test_missing_qm9pack_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "geoae\[qm9\]"'):
        load_qm9(tmp_path)


def test_csv_files_are_found_without_importing_qm9pack(csv_files, tmp_path, monkeypatch):
    package = tmp_path / "site" / "qm9pack"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('qm9pack must not be imported')\n")
    for i in (1, 2, 3):
        (package / "data" / f"qm9_part{i}.csv").write_text(HEADER + "\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert [p.relative_to(package).as_posix() for p in qm9_csv_files()] == [f"data/qm9_part{i}.csv" for i in (1, 2, 3)]


def test_split_is_fixed_disjoint_and_complete():
    index = torch.randperm(50, generator=torch.Generator().manual_seed(3)) * 2 + 1  # odd QM9 indices, unsorted
    torch.manual_seed(123)  # the training seed changes nothing
    split = qm9_split(index, sizes=(30, 8))
    assert {part: len(ids) for part, ids in split.items()} == {"train": 30, "val": 8, "test": 12}
    together = torch.cat(list(split.values()))
    assert sorted(together.tolist()) == list(range(1, 100, 2))
    torch.manual_seed(7)
    again = qm9_split(index.flip(0), sizes=(30, 8))
    assert all(torch.equal(split[part], again[part]) for part in split)
    expected = torch.arange(1, 100, 2)[torch.randperm(50, generator=torch.Generator().manual_seed(0))]
    assert torch.equal(split["train"], expected[:30])


def test_split_rejects_too_few_or_repeated_indices():
    with pytest.raises(ValueError, match="10 molecules, fewer than 100000 \\+ 10000"):
        qm9_split(range(10))
    with pytest.raises(ValueError, match="repeat"):
        qm9_split([1, 2, 2, 3], sizes=(1, 1))


def test_dataset_builds_structures_on_demand_and_batches(csv_files):
    qm9 = read_qm9_csv(csv_files)
    dataset = QM9Dataset(qm9, indices=[184, 4, 1])
    assert len(dataset) == 3 and dataset.indices.tolist() == [184, 4, 1]
    data = dataset[0]
    assert (data.source, data.qm9_id, data.smiles, data.name) == ("qm9[184]", 184, "FC(F)(F)F", "FC(F)(F)F")
    assert data.pos.shape == (5, 3) and data.z.dtype == torch.long and data.y.shape == (1, 15)
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch.num_graphs == 3 and batch.pos.shape == (14, 3) and batch.y.shape == (3, 15)
    assert batch.qm9_id.tolist() == [184, 4, 1]
    assert batch.source == ["qm9[184]", "qm9[4]", "qm9[1]"] and batch.smiles == ["FC(F)(F)F", "C#C", "C"]
    assert batch.batch.tolist() == [0] * 5 + [1] * 4 + [2] * 5
    z, counts = dataset.flat_atoms()
    assert torch.equal(z, batch.z) and counts.tolist() == [5, 4, 5]
    with pytest.raises(KeyError, match="no molecule with index 2"):
        QM9Dataset(qm9, indices=[1, 2])


@pytest.fixture
def small_split(monkeypatch):
    monkeypatch.setattr(qm9_module, "QM9_SPLIT_SIZES", (6, 2))


def test_datamodule_splits_and_limits(csv_files, tmp_path, small_split):
    dm = QM9DataModule(files=csv_files, cache_dir=tmp_path, batch_size=4)
    sizes = {part: len(ids) for part, ids in dm.split_indices.items()}
    assert sizes == {"train": 6, "val": 2, "test": 2}
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (6, 2, 2)
    assert torch.equal(dm.test_set.indices, qm9_split(read_qm9_csv(csv_files)["index"])["test"])
    assert [d.source for d in dm.showcase] == [f"qm9[{i}]" for i in dm.split_indices["test"].tolist()]
    batch = next(iter(dm.val_dataloader()))
    assert batch.source == [f"qm9[{i}]" for i in dm.split_indices["val"].tolist()]

    small = QM9DataModule(files=csv_files, cache_dir=tmp_path, limit=1)
    assert (len(small.train_set), len(small.val_set), len(small.test_set)) == (1, 1, 1)
    assert all(torch.equal(small.split_indices[part], dm.split_indices[part][:1]) for part in dm.split_indices)


def test_datamodule_shuffle_follows_its_seed(csv_files, tmp_path, small_split):
    def order(seed):
        dm = QM9DataModule(files=csv_files, cache_dir=tmp_path, batch_size=6, seed=seed)
        loader = dm.train_dataloader()
        return [next(iter(loader)).qm9_id.tolist() for _ in range(2)]

    first = order(0)
    torch.manual_seed(99)
    assert order(0) == first and first[0] != first[1]
    assert order(1) != first


def test_datamodule_names_a_molecule_with_unknown_species(csv_files, tmp_path, small_split):
    with pytest.raises(StructureError, match=r"^qm9\[184\]: atomic numbers \[9\] are not among the configured species \[1, 6, 7, 8\]$"):
        QM9DataModule(species=[1, 6, 7, 8], files=csv_files, cache_dir=tmp_path)


def test_datamodule_names_a_molecule_too_large(csv_files, tmp_path, small_split):
    with pytest.raises(StructureError, match=r"^qm9\[12\]: 9 atoms, more than max_atoms=8$"):
        QM9DataModule(max_atoms=8, files=csv_files, cache_dir=tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason='needs qm9pack (pip install "geoae[qm9]")')
def test_real_qm9():
    qm9 = load_qm9()  # the default cache, shared with the config tests (one parse per machine)
    counts = qm9["ptr"].diff()
    assert len(qm9["index"]) == 130_831 and (counts.min(), counts.max()) == (3, 29)
    assert qm9["z"].unique().tolist() == [1, 6, 7, 8, 9]
    assert qm9["smiles"][:4] == ["C", "N", "O", "C#C"]
    dm = QM9DataModule(batch_size=64)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (100_000, 10_000, 20_831)
    assert next(iter(dm.train_dataloader())).num_graphs == 64
