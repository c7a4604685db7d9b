"""`DecodingConfig`: one set of decoding options, checked, and the documented defaults of each use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from textvae.decoding import DECODING_DEFAULTS, DecodingConfig, decoding_defaults, resolve_decoding


def test_it_imports_no_torch():
    check = "import sys, textvae.decoding; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_each_use_has_its_defaults():
    assert decoding_defaults("decode") == DecodingConfig(strategy="greedy")
    assert decoding_defaults("sample").strategy == "sample"
    for use in ("reconstruct", "interpolate", "transfer", "analogy"):
        assert decoding_defaults(use) == DecodingConfig(strategy="beam", beam_size=5, no_repeat_ngram_size=3)
    assert set(DECODING_DEFAULTS) == {"decode", "sample", "reconstruct", "interpolate", "transfer", "analogy"}
    with pytest.raises(ValueError, match="no decoding defaults for 'paint'"):
        decoding_defaults("paint")


def test_a_mapping_or_options_change_the_uses_defaults():
    assert resolve_decoding("reconstruct", {"beam_size": 3}) == DecodingConfig(
        "beam", 3, no_repeat_ngram_size=3
    )
    assert resolve_decoding("reconstruct", None, strategy="greedy").no_repeat_ngram_size == 3
    given = DecodingConfig(strategy="sample", top_p=0.9)
    assert resolve_decoding("reconstruct", given) is given
    assert resolve_decoding("sample", given, temperature=0.7) == given.replace(temperature=0.7)
    with pytest.raises(ValueError, match="unknown decoding option.*beams"):
        resolve_decoding("reconstruct", beams=3)
    with pytest.raises(ValueError, match="decoding must be a DecodingConfig"):
        resolve_decoding("reconstruct", "beam")


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(strategy="nucleus"), "strategy must be one of greedy, beam, sample"),
        (dict(beam_size=0), "beam_size must be positive"),
        (dict(beam_size=2.5), "beam_size must be an integer"),
        (dict(max_length=0), "max_length must be a positive integer"),
        (dict(temperature=0.0), "temperature must be positive"),
        (dict(temperature=float("nan")), "temperature must be a finite number"),
        (dict(top_k=-1), "top_k must be >= 0"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be >= 0"),
        (dict(repetition_penalty=float("inf")), "repetition_penalty must be a finite number"),
        (dict(repetition_penalty=True), "repetition_penalty must be a finite number"),
    ],
)
def test_bad_values_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        DecodingConfig(**bad)
