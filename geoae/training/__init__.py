"""Training with lightning."""

from ._module import AutoencoderModule

__all__ = ["AutoencoderModule"]
