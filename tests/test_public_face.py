"""The public face: the names users need first from `import textvae`, lazily; transformers' Auto classes
know the model whichever of textvae and transformers is imported first."""

from __future__ import annotations

import subprocess
import sys

import pytest

import textvae

FIRST_NAMES = ["TextVAEPipeline", "TrainConfig", "DataConfig", "DecodingConfig", "train", "evaluate_run"]


def test_the_first_names_are_on_the_face():
    assert set(FIRST_NAMES) <= set(textvae.__all__)
    for name in textvae.__all__:
        assert getattr(textvae, name) is not None
    assert textvae.TextVAEPipeline.__module__ == "textvae.pipeline"
    with pytest.raises(AttributeError, match="no attribute 'TextVaeModel'"):
        textvae.TextVaeModel  # noqa: B018  (the misspelt name is the point)


@pytest.mark.parametrize(
    "imports",
    ["import textvae; import transformers", "import transformers; import textvae"],
    ids=["textvae first", "transformers first"],
)
def test_automodel_loads_a_run_whichever_is_imported_first(trained_run, imports):
    check = (
        f"import sys; {imports}; from transformers import AutoConfig, AutoModel; "
        f"model = AutoModel.from_pretrained({str(trained_run)!r}); "
        "print(type(model).__name__, AutoConfig.from_pretrained("
        f"{str(trained_run)!r}).model_type)"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["TextVAEModel", "textvae"]


def test_importing_textvae_imports_no_torch():
    check = "import sys, textvae; print('torch' in sys.modules, 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_importing_a_model_module_first_registers_without_a_word():
    # textvae's own modules import transformers: the hook must not register half-made modules (a warning
    # about a circular import was printed in every fresh process), and the model still registers.
    check = (
        "import textvae.models.configuration, textvae.models.modeling; from transformers import AutoConfig; "
        "print(type(AutoConfig.for_model('textvae')).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "TextVAEConfig", done.stderr
    assert "could not register" not in done.stderr
