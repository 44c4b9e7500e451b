"""Every config group composes with hydra's compose, instantiates, and runs one forward pass;
train(cfg) runs end to end on a tiny budget and writes a run folder."""

import csv
import json
from pathlib import Path

import ase
import ase.io
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from geoae.cli._common import build
from geoae.cli.evaluate import evaluate
from geoae.cli.train import train

CONF = str(Path(__file__).resolve().parents[2] / "conf")
GROUPS = {group: sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml")) for group in ("data", "model", "trainer", "evaluation", "experiment")}
TINY = ["model.lmax=2", "model.mul=4", "model.latent_lmax=2", "model.latent_mul=4", "model.signal_lmax=4"]


def compose_config(overrides=(), name="config", **kwargs) -> DictConfig:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides), **kwargs)


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
    if option == "qm9":  # QM9 (the qm9pack package, a test dependency): the first molecules only
        overrides += ["data.limit=8", "data.batch_size=4"]
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
    # half the structures trained on their own decoding (scheduled sampling), the rest on noise
    schedule = ["module.own_positions=0.5", "module.position_noise=0.05"]
    cfg = compose_config(TINY + schedule + ["trainer.max_epochs=2", "data.repeat=2", "trainer.check_val_every_n_epoch=1", "evaluation.rotations=1"])
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

    cfg = compose_config(TINY + ["data.repeat=2", "trainer.max_epochs=2", "checkpoint_every_n_steps=1", "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1", "evaluation.rotations=1"])
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
    with open(tmp_path / "run/metrics.csv", newline="") as file:  # the log holds both parts, once
        logged = [int(row["step"]) for row in csv.DictReader(file) if row["train/loss"]]
    assert logged == [0, 1, 2, 3]
    assert not (tmp_path / "run/metrics.csv.earlier").exists()
    cfg.resume = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(cfg, output_dir=tmp_path / "other")


def test_init_starts_from_a_models_weights_and_refuses_other_options(tmp_path, monkeypatch):
    import geoae
    import torch

    cfg = compose_config(TINY + ["trainer.max_epochs=1", "evaluation.rotations=1"])
    start = build(cfg.model)
    geoae.save(start, tmp_path / "start.pt")
    seen = {}

    def record(self, *args, **kwargs):  # the weights the run starts from
        seen.update({k: v.clone() for k, v in self.model.state_dict().items()})

    from geoae.training import AutoencoderModule

    monkeypatch.setattr(AutoencoderModule, "on_train_start", record)
    cfg.init = str(tmp_path / "start.pt")
    train(cfg, output_dir=tmp_path / "run")
    assert all(torch.equal(seen[k], v) for k, v in start.state_dict().items())
    cfg.model.mul = 2
    with pytest.raises(ValueError, match=r"init=.*start.pt: its model options differ .*'mul': \(4, 2\)"):
        train(cfg, output_dir=tmp_path / "other")


def test_evaluate_a_pretrained_model_writes_metrics(tmp_path):
    cfg = compose_config(["checkpoint=tetris", "data=tetris", "evaluation=tetris", "evaluation.rotations=1"], name="evaluate")
    metrics = evaluate(cfg, output_dir=tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["checkpoint"] == "tetris" and written["num_structures"] == 16
    assert metrics["reconstructed"] == 1.0  # the shipped tetris model reconstructs every shape


def test_train_on_qm9_then_evaluate_molecules_from_the_run_folder(tmp_path):
    cfg = compose_config(
        TINY + ["data=qm9", "data.limit=8", "data.batch_size=4", "evaluation=molecules", "evaluation.limit=4",
                "trainer.max_epochs=1", "trainer.log_every_n_steps=1"]
    )
    metrics = train(cfg, output_dir=tmp_path / "run")
    assert metrics["training"]["steps"] == 2 and metrics["num_structures"] == 4
    assert (tmp_path / "run" / "molecules_by_size.png").is_file()
    cfg = compose_config(["checkpoint=" + str(tmp_path / "run"), "data.limit=6", "evaluation.limit=6", "evaluation.batch_size=4"], name="evaluate")
    metrics = evaluate(cfg, output_dir=tmp_path / "eval")
    for name in ("metrics.json", "molecules.json", "molecules_by_size.png", "molecules_rmsd.png", "molecules_examples.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    assert metrics["num_structures"] == 6 and 0.0 <= metrics["exact"] <= 1.0
    assert metrics["input_stable"] > 0.5  # QM9's own molecules are mostly stable by the bond tables
    cfg.checkpoint = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="without model.ckpt"):
        evaluate(cfg, output_dir=tmp_path / "eval2")


def test_runs_started_in_the_same_second_get_their_own_folders():
    first, second = (compose_config(name="evaluate", return_hydra_config=True).hydra.run.dir for _ in range(2))
    assert first.startswith("outputs/") and first != second
