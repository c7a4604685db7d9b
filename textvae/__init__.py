"""textvae: variational autoencoders of text (train, sample, interpolate, reconstruct, evaluate)."""

from .configuration import TextVAEConfig
from .modeling import TextVAEModel, TextVAEOutput

__all__ = ["TextVAEConfig", "TextVAEModel", "TextVAEOutput"]
__version__ = "0.1.0"
