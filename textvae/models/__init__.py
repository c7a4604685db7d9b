"""The model: architecture options (torch-free), `TextVAEConfig`, `TextVAEModel` and its parts.

`architecture.py` holds the option table; `configuration.py` and `modeling.py` the config and model; `recurrent.py`,
`transformer.py` and `backbones.py` the encoders and decoders (pretrained Hub models in the last)."""

from ..lazy import lazy_face

_NAMES = {
    "ARCHITECTURE_OPTIONS": ".architecture",
    "ArchitectureOption": ".architecture",
    "DECODER_TYPES": ".architecture",
    "ENCODER_TYPES": ".architecture",
    "RNN_TYPES": ".architecture",
    "TextVAEConfig": ".configuration",
    "TextVAEModel": ".modeling",
    "TextVAEOutput": ".modeling",
    "gaussian_kl": ".modeling",
    "gaussian_log_density": ".modeling",
    "free_bits_kl": ".modeling",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(globals(), _NAMES)
