"""textvae: variational autoencoders of text (train, sample, interpolate, reconstruct, evaluate).

The names users need first, each imported on first use (PEP 562), so that `import textvae`, `textvae --help`
and argument errors answer before torch and transformers are imported:

    from textvae import TextVAEPipeline, TrainConfig, train
    run = train(TrainConfig(data="ptb", epochs=2), output_dir="runs/ptb")
    pipeline = TextVAEPipeline.from_pretrained(run)

`transformers.AutoModel.from_pretrained(run)` and `AutoConfig` know textvae's model once `textvae` is
imported, whichever of the two is imported first: importing transformers after textvae registers the
model right after transformers itself has loaded (`_RegisterWithTransformers`).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys

from .lazy import lazy_face

__version__ = "0.1.0"
_NAMES = {
    "TextVAEConfig": ".models.configuration",
    "TextVAEModel": ".models.modeling",
    "TextVAEOutput": ".models.modeling",
    "TextVAEPipeline": ".pipeline",
    "DataConfig": ".data.config",
    "TrainConfig": ".training.config",
    "DecodingConfig": ".decoding",
    "EncoderNoise": ".data.noise",
    "train": ".training.run",
    "evaluate_run": ".evaluation.run",
    "evaluate": ".evaluation.split",
    "format_results": ".evaluation.run",
    "load_corpus": ".data.corpora",
    "read_sentence_file": ".data.corpora",
    "AggregatePrior": ".priors.distributions",
    "StandardPrior": ".priors.distributions",
    "fit_prior_for_run": ".priors.fitting",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(globals(), _NAMES)


def _register() -> None:
    """Import the model module, which registers `TextVAEConfig` and `TextVAEModel` with transformers' Auto
    classes."""
    from .models import modeling  # noqa: F401


def _model_modules_loading() -> bool:
    """Whether one of textvae's model modules is being imported (and imported transformers): registering
    now would import it again, half-made; `modeling.py` registers the model as it finishes loading."""
    for name in ("textvae.models.configuration", "textvae.models.modeling"):
        spec = getattr(sys.modules.get(name), "__spec__", None)
        if spec is not None and getattr(spec, "_initializing", False):
            return True
    return False


class _RegisterWithTransformers(importlib.abc.MetaPathFinder):
    """A one-time import hook: when `transformers` is first imported, register textvae's model right after
    transformers' own package has run, so that `AutoModel.from_pretrained(run)` works without importing
    torch at `import textvae` (the command line's fast start)."""

    def find_spec(self, name, path, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)  # once; and the lookup below must not find this hook again
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def run_then_register(module) -> None:
            run(module)
            if _model_modules_loading():  # textvae's own import of transformers: it registers when done
                return
            try:
                _register()
            except Exception as error:  # transformers works without textvae's registration; say why not
                logging.getLogger(__name__).warning("textvae could not register with transformers: %s", error)

        spec.loader.exec_module = run_then_register
        return spec


if "transformers" in sys.modules:  # transformers is loaded already: registering costs nothing more
    _register()
elif not any(isinstance(finder, _RegisterWithTransformers) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTransformers())
