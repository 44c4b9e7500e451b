"""``geoae-evaluate``: evaluate a trained model on a data set, from the hydra configs in ``conf/``
(``conf/evaluate.yaml``: ``checkpoint``, a ``data`` group and an ``evaluation`` group).

The run folder (``outputs/<date>/<time>/``) gets ``config.yaml`` (resolved), ``metrics.json``
(what the evaluation returns, plus ``checkpoint`` and ``evaluation_seconds``) and the
evaluation's own files (for molecules: ``molecules.json``, ``molecules_by_size.png``,
``molecules_rmsd.png``, ``molecules_examples.png``). ``evaluate(cfg)`` does the work and can be
called from tests; ``main`` is the hydra entry point.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import geoae

from ._common import CONFIG_DIR, build, evaluate_model, write_json

__all__ = ["evaluate", "main"]


def checkpoint_path(checkpoint: str) -> str:
    """``checkpoint`` itself, or a run folder's ``model.ckpt``."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "model.ckpt"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint={checkpoint}: a folder without model.ckpt")
        return str(path)
    return checkpoint


def evaluate(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Load ``cfg.checkpoint``, evaluate it with ``cfg.evaluation`` on ``cfg.data`` and write
    ``metrics.json`` to ``output_dir`` (default: hydra's run folder). Returns the metrics."""
    out = Path(output_dir or HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    model = geoae.load(checkpoint_path(str(cfg.checkpoint)), child_count=cfg.get("child_count"))
    datamodule = build(cfg.data)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    start = time.perf_counter()
    metrics = evaluate_model(cfg.evaluation, model, datamodule, out)
    metrics = {"checkpoint": str(cfg.checkpoint), **metrics, "evaluation_seconds": time.perf_counter() - start}
    write_json(out / "metrics.json", metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    metrics = evaluate(cfg)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}))
