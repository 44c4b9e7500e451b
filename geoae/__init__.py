"""geoae: E(3)-equivariant geometric autoencoders.

>>> import geoae
>>> model = geoae.Autoencoder(species=[6], max_atoms=4)
>>> model.latent_irreps.dim
400
"""

from geoae.model import Autoencoder, load, save

__version__ = "0.1.0"

__all__ = ["Autoencoder", "load", "save"]
