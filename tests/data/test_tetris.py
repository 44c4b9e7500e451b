import torch

from geoae.data import BLOCK_Z, TETRIS_SHAPES, TetrisDataModule, tetris


def test_shapes_are_e3nn_coordinates():
    shapes = {d.name: d.pos for d in tetris()}
    assert list(shapes) == list(TETRIS_SHAPES)
    assert shapes["chiral_1"].tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 1, 0]]
    assert shapes["zigzag"].tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [2, 1, 0]]
    assert all((d.z == BLOCK_Z).all() for d in tetris())


def test_chiral_pair_are_mirror_images_not_rotations():
    a, b = (torch.tensor(TETRIS_SHAPES[n], dtype=torch.float64) for n in ["chiral_1", "chiral_2"])
    # mirroring y maps chiral_1 onto chiral_2 exactly
    assert torch.equal(a * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64), b)
    # no proper rotation does: the sign of the triple product of the bonds differs
    def handedness(p):
        return torch.linalg.det(torch.stack([p[1] - p[0], p[2] - p[0], p[3] - p[2]]))
    assert handedness(a) * handedness(b) < 0


def test_rotations_are_rigid_and_reproducible():
    fixed = {d.name: d.pos.double() for d in tetris()}
    rotated = tetris(rotations=5, seed=3, dtype=torch.float64)
    assert len(rotated) == 40
    for d in rotated:
        base = fixed[d.name]
        assert torch.allclose(torch.cdist(d.pos, d.pos), torch.cdist(base, base), atol=1e-12)
    again = tetris(rotations=5, seed=3, dtype=torch.float64)
    assert all(torch.equal(x.pos, y.pos) for x, y in zip(rotated, again))
    assert not torch.equal(rotated[0].pos, tetris(rotations=5, seed=4, dtype=torch.float64)[0].pos)


def test_mirror_images_are_inverted():
    structures = tetris(mirror=True)
    assert [d.name for d in structures[:2]] == ["chiral_1", "chiral_1_mirror"]
    assert torch.equal(structures[1].pos, -structures[0].pos)


def test_datamodule_batches():
    dm = TetrisDataModule(species=[BLOCK_Z], val_rotations=2, batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch.pos.shape == (32, 3) and batch.batch.max() == 7
    assert len(dm.val_set) == 8 * 2 * 2
