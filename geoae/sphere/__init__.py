r"""Spherical signals: batched projection of vectors and peak finding.

A set of vectors becomes a two-channel signal on the sphere (:func:`project`); :func:`find_peaks`
turns a batch of such signals back into vectors;
:func:`count_vectors` reads how many vectors a signal holds and :func:`find_counted_peaks` finds
that many peaks. See ``docs/sphere.md``.
"""

from ._count import count_vectors, find_counted_peaks, integral_count
from ._grid import SphereGrid, default_resolution, sphere_grid
from ._harmonics import dirac_scale, harmonics_and_gradient, kernel, spherical_harmonics
from ._peaks import Peaks, find_peaks
from ._project import evaluate, evaluate_gradient, project

__all__ = [
    "Peaks",
    "SphereGrid",
    "count_vectors",
    "integral_count",
    "default_resolution",
    "dirac_scale",
    "evaluate",
    "evaluate_gradient",
    "find_counted_peaks",
    "find_peaks",
    "harmonics_and_gradient",
    "kernel",
    "project",
    "sphere_grid",
    "spherical_harmonics",
]
