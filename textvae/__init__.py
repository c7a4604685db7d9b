"""textvae: variational autoencoders of text (train, sample, interpolate, reconstruct, evaluate).

The model classes load on first use (PEP 562), so that `textvae --help` and argument errors answer
before torch and transformers are imported. Importing `textvae` after `transformers` (or touching any
model class) registers `TextVAEModel` with `transformers.AutoModel`.
"""

import sys

__all__ = ["TextVAEConfig", "TextVAEModel", "TextVAEOutput"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "TextVAEConfig":
        from .models.configuration import TextVAEConfig

        return TextVAEConfig
    if name in ("TextVAEModel", "TextVAEOutput"):
        from .models import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'textvae' has no attribute {name!r}")


if "transformers" in sys.modules:  # transformers is loaded already: registering costs nothing more
    from .models import modeling  # noqa: F401
