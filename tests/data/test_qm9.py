"""QM9 from CSV files in qm9pack's format: caching, the fixed split, the lazy dataset and the
data module. Only the last test needs qm9pack (a test dependency; skipped without it)."""

import importlib.util

import pytest
import torch
from torch_geometric.loader import DataLoader

import geoae.data._qm9 as qm9_module
from geoae.data import QM9DataModule, QM9Dataset, StructureError, load_qm9, qm9_split, read_qm9_csv


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
