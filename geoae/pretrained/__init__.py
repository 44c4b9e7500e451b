"""Pretrained models shipped with geoae; load them with ``geoae.load("qm9")`` or
``geoae.load("tetris")``. How each was trained (command, seed, config, log, metrics) is in this
folder's README.md and ``<name>.yaml`` / ``<name>.json``."""
