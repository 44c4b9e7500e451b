"""geoae: E(3)-equivariant geometric autoencoders."""

__version__ = "0.1.0"
