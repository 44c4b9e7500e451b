"""Every config group composes with hydra's compose, instantiates, and runs one forward pass;
train(cfg) runs end to end on a tiny budget and writes a run folder."""

import json
from pathlib import Path

import ase
import ase.io
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from geoae.cli._common import build
from geoae.cli.train import train

CONF = str(Path(__file__).resolve().parents[2] / "conf")
GROUPS = {group: sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml")) for group in ("data", "model", "trainer", "evaluation", "experiment")}
TINY = ["model.lmax=2", "model.mul=4", "model.latent_lmax=2", "model.latent_mul=4", "model.signal_lmax=4"]


def compose_config(overrides=()) -> DictConfig:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def write_molecules(folder: Path) -> None:
    folder.mkdir()
    for i in range(6):
        ase.io.write(folder / f"m{i}.xyz", ase.Atoms("CO2", positions=[[0, 0, 0], [0, 0, 1.16 + 0.01 * i], [0, 0, -1.16]]))


@pytest.mark.parametrize("group, option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_config_option_instantiates_and_runs_forward(group, option, tmp_path):
    overrides = [f"{group}={option}"] + TINY
    if group == "data" and option == "files":
        write_molecules(tmp_path / "mols")
        overrides += [f"data.path={tmp_path / 'mols'}", "data.species=[6,8]", "data.max_atoms=3"]
    cfg = compose_config(overrides)
    datamodule, model = build(cfg.data), build(cfg.model)
    build(cfg.module, model=model)
    build(cfg.trainer)
    batch = next(iter(datamodule.train_dataloader()))
    assert model.encode(batch).shape == (batch.num_graphs, model.latent_irreps.dim)
    assert model.loss(batch)["loss"].isfinite()


def test_unknown_option_lists_valid_ones():
    cfg = compose_config(["+model.nonsense=1"])
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['nonsense'\]; valid options: \[.*'lmax'"):
        build(cfg.model)


def test_unknown_convolution_lists_valid_ones():
    cfg = compose_config(["model.conv=nope"])
    with pytest.raises(ValueError, match="valid names: \\['nequip'\\]"):
        build(cfg.model)


def test_train_writes_a_run(tmp_path):
    cfg = compose_config(TINY + ["trainer.max_epochs=2", "data.repeat=2", "trainer.check_val_every_n_epoch=1", "evaluation.rotations=1"])
    metrics = train(cfg, output_dir=tmp_path)
    for name in ("config.yaml", "model.ckpt", "checkpoints/last.ckpt", "metrics.csv", "metrics.json", "loss_curves.png", "reconstructions.png"):
        assert (tmp_path / name).is_file(), name
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["num_structures"] == 16 and written["training"]["steps"] == 4
    assert 0.0 <= metrics["reconstructed"] <= 1.0
    import geoae

    model = geoae.load(tmp_path / "model.ckpt")
    assert model.decode(model.encode([ase.Atoms("C2", positions=[[0, 0, 0], [0, 0, 1.5]])]))[0] is not None


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    from geoae.training import AutoencoderModule

    cfg = compose_config(TINY + ["data.repeat=2", "trainer.max_epochs=2", "checkpoint_every_n_steps=1", "trainer.check_val_every_n_epoch=1", "evaluation.rotations=1"])
    original = AutoencoderModule.training_step

    def crash_at_step_2(self, batch, batch_idx):
        if self.global_step == 2:
            raise RuntimeError("the machine went away")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(AutoencoderModule, "training_step", crash_at_step_2)
    with pytest.raises(RuntimeError, match="went away"):
        train(cfg, output_dir=tmp_path / "run")
    monkeypatch.setattr(AutoencoderModule, "training_step", original)
    import torch

    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)["global_step"] == 2
    cfg.resume = str(tmp_path / "run")
    metrics = train(cfg, output_dir=tmp_path / "run")
    assert metrics["training"]["steps"] == 4  # 2 steps before the crash, 2 after
    cfg.resume = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(cfg, output_dir=tmp_path / "other")
