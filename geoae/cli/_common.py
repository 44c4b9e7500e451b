"""What the command-line entry points share: the config folder, building objects from config
nodes, running an evaluation, and writing JSON safely."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from geoae._atomic import atomic_path

__all__ = ["CONFIG_DIR", "build", "evaluate_model", "write_json"]

# The configs live in the repository's conf/ (the commands run from a source checkout, installed
# with `pip install -e .`); hydra takes an absolute config path.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON through a temporary file and a rename (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))


def build(node: DictConfig, **kwargs):
    """``hydra.utils.instantiate`` whose error for an unknown option lists the valid ones."""
    target = get_object(node._target_)
    valid = inspect.signature(target).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in valid.values()):
        unknown = sorted(set(node) - {"_target_", "_partial_", "_recursive_", "_convert_"} - set(valid))
        if unknown:
            raise ValueError(f"{node._target_}: unknown option(s) {unknown}; valid options: {sorted(valid)}")
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        raise ValueError(f"{node._target_}: {error}") from error


def evaluate_model(node: DictConfig, model, datamodule, output_dir: Path) -> dict:
    """Run the evaluation configured by ``node`` (``conf/evaluation``) on ``model``.

    An evaluation is a function taking ``model`` and returning a JSON-able dict of metrics;
    it may also take ``datamodule`` (the structures to evaluate on) and ``output_dir`` (where
    to draw its figures), which are passed when its signature names them.
    """
    accepted = inspect.signature(get_object(node._target_)).parameters
    extras = {"datamodule": datamodule, "output_dir": output_dir}
    return build(node, model=model, **{k: v for k, v in extras.items() if k in accepted})
