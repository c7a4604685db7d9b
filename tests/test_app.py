"""The explorer: each tab's function gives the pipeline's own result, limits and bad input give the page's
message, concurrent requests give the sequential results, and a served app answers through gradio_client."""

from __future__ import annotations

import csv
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from textvae.app.explorer import PATH_HEADERS, AppLimits, Explorer
from textvae.decoding import DecodingConfig
from textvae.latent.arithmetic import attribute_vector
from textvae.pipeline import TextVAEPipeline
from textvae.plotting import project_latents
from textvae.priors.fitting import fit_prior_for_run

gr = pytest.importorskip("gradio", reason="the explorer needs gradio: pip install -e '.[dev]'")

START, END = "the cat sat on the mat", "a dog ran under the rug"


def label_of(sentence: str) -> str:
    return "cat" if "cat" in sentence.split() else "other"


@pytest.fixture(scope="module")
def labelled_corpus(trained_run, tmp_path_factory):
    sentences = (trained_run.parent / "corpus.txt").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("corpus") / "labelled.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([sentence, label_of(sentence)] for sentence in sentences)
    return path, sentences


@pytest.fixture(scope="module")
def explorer(trained_run, labelled_corpus, tmp_path_factory):
    # A copy: the corpus encodings are cached in the run folder, whose files other tests count.
    run = shutil.copytree(trained_run, tmp_path_factory.mktemp("explorer") / "run")
    fit_prior_for_run(run, device="cpu")  # the Sample tab offers the aggregate prior of a run that has one
    limits = AppLimits(max_map_points=150)
    return Explorer.from_run(run, labelled_corpus[0], label_column="label", limits=limits, device="cpu")


@pytest.fixture(scope="module")
def pipeline(trained_run):
    return TextVAEPipeline.from_pretrained(trained_run, device="cpu")


def test_each_tab_gives_the_pipelines_result(explorer, pipeline, labelled_corpus):
    rows = explorer.sample(4, 0.8, 5, 0.9, "standard", 3)
    decoding = DecodingConfig(strategy="sample", temperature=0.8, top_k=5, top_p=0.9)
    assert rows == [[i, s] for i, s in enumerate(pipeline.sample(4, decoding, seed=3), 1)]
    assert explorer.sample(4, seed=3) != explorer.sample(4, seed=4)
    run = TextVAEPipeline.from_pretrained(explorer.pipeline.run_dir, device="cpu")
    assert explorer.priors == ["standard", "aggregate"]
    aggregate = [s for _, s in explorer.sample(4, 1.0, 0, 1.0, "aggregate", 3)]
    assert aggregate == run.sample(4, seed=3, prior="aggregate") != run.sample(4, seed=3)

    text = "the cat sat\n\n  a dog ran on the mat  \n"
    expected = pipeline.reconstruct(["the cat sat", "a dog ran on the mat"], strategy="beam", beam_size=3)
    assert explorer.reconstruct(text, "beam", 3) == [
        ["the cat sat", expected[0]],
        ["a dog ran on the mat", expected[1]],
    ]

    path = pipeline.interpolation_path(START, END, 6, "slerp")["path"]
    rows = explorer.interpolate(START, END, 6, "slerp")
    assert len(rows[0]) == len(PATH_HEADERS) and [row[0] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert [row[2] for row in rows] == [point["sentence"] for point in path]
    assert [row[1] for row in rows] == [round(point["t"], 3) for point in path]
    assert [row[3] for row in rows] == [round(point["similarity_to_start"], 3) for point in path]

    assert explorer.analogy("the cat", "the dog", "a cat sat") == pipeline.analogy(
        "the cat", "the dog", "a cat sat"
    )

    sentences = labelled_corpus[1]
    found = pipeline.neighbours(["the red cat"], sentences, 4)[0]
    assert [row[1] for row in explorer.neighbours("the red cat", 4)] == [f["sentence"] for f in found]
    assert [row[3] for row in explorer.neighbours("the red cat", 4)] == [
        label_of(f["sentence"]) for f in found
    ]


def test_transfer_by_labels_and_by_examples(explorer, pipeline, labelled_corpus):
    sentences = labelled_corpus[1]
    cats = [s for s in sentences if label_of(s) == "cat"]
    others = [s for s in sentences if label_of(s) == "other"]
    vector = attribute_vector(pipeline.encode(others)[0], pipeline.encode(cats)[0])
    expected = pipeline.transfer(["a dog ran", "the mat"], vector=vector, strength=2.0)
    assert explorer.transfer("a dog ran\nthe mat", "other", "cat", strength=2.0) == [
        ["a dog ran", expected[0]],
        ["the mat", expected[1]],
    ]
    rows = explorer.transfer("a dog ran", source_text="a dog\nthe dog sat", target_text="a cat", strength=1.5)
    assert rows == [
        ["a dog ran", pipeline.transfer(["a dog ran"], ["a dog", "the dog sat"], ["a cat"], 1.5)[0]]
    ]


def test_latent_map_points_and_selection(explorer, pipeline, labelled_corpus):
    sentences = labelled_corpus[1][:150]
    points = explorer.map_points()
    xy, ratios = project_latents(pipeline.encode(sentences)[0])
    assert [p["sentence"] for p in points] == sentences and len(ratios) == 2
    assert np.allclose([[p["x"], p["y"]] for p in points], xy, atol=1e-4)
    assert [p["length"] for p in points] == [len(s.split()) for s in sentences]
    assert [p["label"] for p in points] == [label_of(s) for s in sentences]
    band = explorer.map_points([0.05, -0.01])  # either order
    assert band and all(-0.01 <= p["x"] <= 0.05 for p in band) and len(band) < len(points)
    assert [p["x"] for p in band] == sorted(p["x"] for p in band)
    assert explorer.map_point(7) == (sentences[7], pipeline.reconstruct([sentences[7]])[0])


def test_training_tab_has_the_runs_figures_and_configs(explorer):
    figures, configs = explorer.training()
    assert list(figures) == ["curves.png", "kl_per_dim.png", "active_units.png"]
    assert configs["model"]["latent_dim"] == 4 and configs["training"]["epochs"] == 2


BAD_REQUESTS = [
    ("sample", (51,), "number of samples must be between 1 and 50"),
    ("sample", (2.5,), "number of samples must be a whole number"),
    ("sample", (3, 0.0), "temperature must be positive"),
    ("sample", (3, 1.0, 0, 1.0, "uniform"), "prior must be one of standard, aggregate, got 'uniform'"),
    ("reconstruct", ("\n \n",), "type at least one sentence"),
    ("reconstruct", ("a\n" * 21,), "21 sentences, at most 20"),
    ("reconstruct", ("the cat " * 31,), "62 words: at most 60"),
    ("reconstruct", ("the cat", "beam", 11), "beam size must be between 1 and 10"),
    ("reconstruct", ("the cat", "nucleus"), "strategy must be one of"),
    ("interpolate", ("", END), "first sentence is empty"),
    ("interpolate", (START, END, 21), "steps must be between 2 and 20"),
    ("interpolate", (START, END, 5, "cubic"), "method must be one of"),
    (
        "transfer",
        ("the cat", "other", "cat", "", "", 6.0),
        "strength must be a number between -5 and 5, got 6.0",
    ),
    ("transfer", ("the cat", "other", "dog"), "choose the to label among cat, other"),
    ("transfer", ("the cat", None, None, "a dog", ""), "to examples: type at least one sentence"),
    ("analogy", ("the cat", " ", "a dog"), "b is empty"),
    ("neighbours", ("the cat", 21), "k must be between 1 and 20"),
    ("map_point", (150,), "point must be between 0 and 149"),
]


@pytest.mark.parametrize("method, args, message", BAD_REQUESTS, ids=[m for m, _, _ in BAD_REQUESTS])
def test_limits_and_bad_input_give_the_pages_message(explorer, method, args, message):
    with pytest.raises(ValueError, match=message):
        getattr(explorer, method)(*args)
    from textvae.app.page import shown_in_page

    with pytest.raises(gr.Error, match=message) as caught:
        shown_in_page(getattr(explorer, method))(*args)
    assert caught.value.print_exception is False  # a user's mistake prints no traceback on the console


def test_without_a_corpus_the_corpus_tabs_say_how_to_get_one(pipeline):
    explorer = Explorer(pipeline)
    with pytest.raises(ValueError, match="prior must be one of standard(, aggregate)?, got 'uniform'"):
        explorer.sample(2, prior="uniform")
    for call in (lambda: explorer.neighbours("the cat"), explorer.map_points, lambda: explorer.map_point(0)):
        with pytest.raises(ValueError, match="start the explorer with --corpus FILE"):
            call()
    with pytest.raises(ValueError, match="type examples of both sides|needs a corpus"):
        explorer.transfer("the cat", "a", "b")
    assert explorer.sample(2, seed=0) == [
        [1, pipeline.sample(2, seed=0)[0]],
        [2, pipeline.sample(2, seed=0)[1]],
    ]


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_steps must be positive, got 0"):
        AppLimits(max_steps=0)


def test_concurrent_requests_give_the_sequential_results(explorer):
    requests = [("sample", (5, 1.0, 0, 1.0, "standard", seed)) for seed in range(6)]
    requests += [("interpolate", (START, f"a dog ran {word}", 5, "lerp")) for word in ("on", "under", "big")]
    requests += [("reconstruct", ("the cat sat\nthe dog", "sample", 5, seed)) for seed in range(3)]
    sequential = [getattr(explorer, name)(*args) for name, args in requests]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(lambda request: getattr(explorer, request[0])(*request[1]), requests * 2))
    assert concurrent == sequential * 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_served_app_answers_through_gradio_client(explorer):
    gradio_client = pytest.importorskip("gradio_client")
    from textvae.app.page import build_app, launch_app

    app = build_app(explorer)
    try:
        _, url, _ = launch_app(app, "127.0.0.1", free_port(), block=False, quiet=True)
        assert url.startswith("http://127.0.0.1:")
        client = gradio_client.Client(url, verbose=False)
        table = client.predict(3, 1.0, 0, 1.0, "standard", 5, api_name="/sample")
        assert table["data"] == explorer.sample(3, seed=5)
        table = client.predict(START, END, 4, "lerp", api_name="/interpolate")
        assert table["headers"] == PATH_HEADERS and table["data"] == explorer.interpolate(START, END, 4)
        assert list(client.predict(3, api_name="/map_point")) == list(explorer.map_point(3))
        with pytest.raises(gradio_client.exceptions.AppError, match="first sentence is empty"):
            client.predict("  ", END, 4, "lerp", api_name="/interpolate")
    finally:
        app.close()
