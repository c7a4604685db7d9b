"""The latent space at work: labelled files, neighbours and their cache, latent arithmetic, scores, probes."""

from __future__ import annotations

import json
import logging
import random
import shutil

import numpy as np
import pytest
import torch

from textvae import TextVAEConfig, TextVAEModel
from textvae.checkpointing import load_model, save_model
from textvae.data.corpora import read_sentence_file
from textvae.data.storage import TokenizedSplit
from textvae.data.tokenization import train_word_tokenizer
from textvae.evaluation.scoring import auroc, score_sentences
from textvae.evaluation.split import evaluate
from textvae.latent.arithmetic import analogy_latent, attribute_vector, nearest_neighbours
from textvae.latent.cache import CACHE_PREFIX, encode_corpus_cached
from textvae.latent.probes import draw_label_subsets, probe_accuracy, tfidf_probe_accuracy
from textvae.pipeline import TextVAEPipeline

from .helpers import WORDS, make_sentences

# Sentences of distinct lengths: length bucketing puts them in the same order whatever the input order.
DISTINCT_LENGTHS = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(i + 1)) for i in range(8)]


@pytest.fixture(scope="module")
def pipeline(trained_run):
    return TextVAEPipeline.from_pretrained(trained_run, device="cpu")


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run, free to gain caches and new weights."""
    return shutil.copytree(trained_run, tmp_path / "run")


@pytest.fixture(scope="module")
def random_pipeline():
    """An untrained model: its decodings vary with z, unlike a tiny trained model near posterior collapse."""
    tokenizer = train_word_tokenizer(make_sentences(50))
    torch.manual_seed(0)
    config = TextVAEConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, latent_dim=4)
    return TextVAEPipeline(TextVAEModel(config).eval(), tokenizer, max_length=8)


def distinct_sentences(count: int, seed: int) -> list[str]:
    return sorted(set(make_sentences(count, seed=seed)))


# ---------------------------------------------------------------- labelled files

TABLES = {
    ".csv": "text,label\nthe cat sat,pos\na dog ran,neg\n",
    ".tsv": "text\tlabel\nthe cat sat\tpos\na dog ran\tneg\n",
    ".jsonl": '{"text": "the cat sat", "label": "pos"}\n{"text": "a dog ran", "label": "neg"}\n',
    ".json": '[{"text": "the cat sat", "label": "pos"}, {"text": "a dog ran", "label": "neg"}]',
}


@pytest.mark.parametrize("suffix", sorted(TABLES))
def test_tables_with_default_and_named_columns(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_text(TABLES[suffix], encoding="utf-8")
    assert read_sentence_file(path) == (["the cat sat", "a dog ran"], None)
    assert read_sentence_file(path, label_column="label") == (["the cat sat", "a dog ran"], ["pos", "neg"])
    renamed = tmp_path / f"renamed{suffix}"
    renamed.write_text(TABLES[suffix].replace("text", "sentence").replace("label", "y"), encoding="utf-8")
    assert read_sentence_file(renamed, text_column="sentence", label_column="y")[1] == ["pos", "neg"]
    with pytest.raises(ValueError, match=r"no text column 'text' \(columns: sentence, y\)"):
        read_sentence_file(renamed)
    with pytest.raises(ValueError, match="no label column 'label'"):
        read_sentence_file(renamed, text_column="sentence", label_column="label")


def test_text_file_strips_the_bom_and_skips_blank_lines(tmp_path, caplog):
    path = tmp_path / "data.txt"
    path.write_bytes("\ufeffthe cat\n\n  \na dog\n".encode())
    with caplog.at_level(logging.WARNING):
        assert read_sentence_file(path) == (["the cat", "a dog"], None)
    assert "skipped 2 blank sentences" in caplog.text
    with pytest.raises(ValueError, match="no columns"):
        read_sentence_file(path, label_column="label")


def test_csv_bom_and_blank_rows_drop_their_labels(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("\ufefftext,label\nthe cat,1\n,0\na dog,0\n".encode())
    assert read_sentence_file(path, label_column="label") == (["the cat", "a dog"], [1, 0])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"\n \n", "is empty"),
        ("empty.csv", b"", "is empty"),
        ("latin1.txt", b"fine\ncaf\xe9\n", "not UTF-8 .*line 2"),
        (
            "unlabelled.jsonl",
            b'{"text": "a", "label": 1}\n{"text": "b", "label": null}\n',
            "no 'label' value",
        ),
        ("unlabelled.csv", b"text,label\na,1\nb,\n", "no 'label' value .*row 2"),
        ("data.xml", b"<a/>", "expected a .txt"),
    ],
)
def test_bad_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_sentence_file(path, label_column="label" if "unlabelled" in name else None)


# ---------------------------------------------------------------- neighbours


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_nearest_neighbours_match_a_full_sort_in_any_chunking(metric):
    generator = torch.Generator().manual_seed(0)
    corpus, query = torch.randn(50, 6, generator=generator), torch.randn(3, 6, generator=generator)
    if metric == "cosine":
        full = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(corpus, dim=1).T
        expected = full.sort(dim=1, descending=True)
    else:
        expected = torch.cdist(query, corpus).sort(dim=1)
    for chunk_size in (7, 50, 1000):
        scores, indices = nearest_neighbours(query, corpus, k=4, metric=metric, chunk_size=chunk_size)
        assert torch.equal(indices, expected.indices[:, :4])
        assert torch.allclose(scores, expected.values[:, :4], atol=1e-5)
    # k is capped at N, and a corpus vector is its own nearest neighbour.
    scores, indices = nearest_neighbours(corpus[:3], corpus[:3], k=10, metric=metric)
    assert indices.shape == (3, 3) and indices[:, 0].tolist() == [0, 1, 2]


def test_nearest_neighbours_refuse_bad_options():
    with pytest.raises(ValueError, match="metric"):
        nearest_neighbours(torch.zeros(1, 2), torch.zeros(3, 2), metric="dot")
    with pytest.raises(ValueError, match="k must"):
        nearest_neighbours(torch.zeros(1, 2), torch.zeros(3, 2), k=0)
    with pytest.raises(ValueError, match="shape|need"):
        nearest_neighbours(torch.zeros(1, 3), torch.zeros(3, 2))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_a_corpus_sentence_is_its_own_nearest_neighbour(pipeline, metric):
    corpus = distinct_sentences(40, seed=5)
    found = pipeline.neighbours(corpus[:10], corpus, k=3, metric=metric)
    assert [hits[0]["index"] for hits in found] == list(range(10))
    assert all(hits[0]["sentence"] == corpus[i] for i, hits in enumerate(found))
    scores = [[hit["score"] for hit in hits] for hits in found]
    assert all(row == sorted(row, reverse=metric == "cosine") for row in scores)


class EncodeSpy:
    """Counts the sentences a pipeline encodes."""

    def __init__(self, pipeline):
        self.encode, self.sentences = pipeline.encode, 0

    def __call__(self, sentences):
        self.sentences += len(sentences)
        return self.encode(sentences)


def test_corpus_cache_is_reused_and_rebuilt_when_the_corpus_changes(run_copy, tmp_path, monkeypatch, caplog):
    pipeline = TextVAEPipeline.from_pretrained(run_copy, device="cpu")
    spy = EncodeSpy(pipeline)
    monkeypatch.setattr(pipeline, "encode", spy)
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("\n".join(distinct_sentences(30, seed=2)), encoding="utf-8")
    sentences = read_sentence_file(corpus_file)[0]
    with caplog.at_level(logging.INFO, logger="textvae.latent.cache"):
        first = encode_corpus_cached(pipeline, sentences, corpus_file)
        assert spy.sentences == len(sentences) and "building" in caplog.text
        again = encode_corpus_cached(pipeline, sentences, corpus_file)
        assert spy.sentences == len(sentences) and "reusing" in caplog.text  # nothing encoded
    assert torch.equal(first, again) and torch.equal(first, spy.encode(sentences)[0])
    caches = list(run_copy.glob(f"{CACHE_PREFIX}*.safetensors"))  # the run folder by default
    assert len(caches) == 1
    # New bytes in the same file: rebuilt in place.
    corpus_file.write_text("\n".join(sentences[:-1]), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="textvae.latent.cache"):
        changed = encode_corpus_cached(pipeline, sentences[:-1], corpus_file)
    assert "rebuilding" in caplog.text and spy.sentences == 2 * len(sentences) - 1
    assert torch.equal(changed, first[:-1]) and list(run_copy.glob(f"{CACHE_PREFIX}*")) == caches
    # Another column choice of the same file is another cache.
    encode_corpus_cached(pipeline, sentences[:-1], corpus_file, text_column="text")
    assert len(list(run_copy.glob(f"{CACHE_PREFIX}*"))) == 2


def test_corpus_cache_is_rebuilt_when_the_weights_change(run_copy, tmp_path, monkeypatch):
    corpus_file = tmp_path / "corpus.txt"
    sentences = distinct_sentences(20, seed=3)
    corpus_file.write_text("\n".join(sentences), encoding="utf-8")
    before = encode_corpus_cached(TextVAEPipeline.from_pretrained(run_copy), sentences, corpus_file, tmp_path)
    model = load_model(run_copy)
    with torch.no_grad():
        model.posterior.bias.add_(1.0)
    save_model(run_copy, model)
    pipeline = TextVAEPipeline.from_pretrained(run_copy, device="cpu")
    spy = EncodeSpy(pipeline)
    monkeypatch.setattr(pipeline, "encode", spy)
    after = encode_corpus_cached(pipeline, sentences, corpus_file, tmp_path)
    assert spy.sentences == len(sentences) and not torch.allclose(before, after)
    assert len(list(tmp_path.glob(f"{CACHE_PREFIX}*"))) == 1


def test_neighbours_with_a_corpus_path_use_the_cache(run_copy, tmp_path):
    pipeline = TextVAEPipeline.from_pretrained(run_copy, device="cpu")
    corpus_file = tmp_path / "corpus.txt"
    sentences = distinct_sentences(20, seed=4)
    corpus_file.write_text("\n".join(sentences), encoding="utf-8")
    plain = pipeline.neighbours(sentences[:2], sentences, k=2)
    assert pipeline.neighbours(sentences[:2], sentences, k=2, corpus_path=corpus_file) == plain
    assert len(list(run_copy.glob(f"{CACHE_PREFIX}*"))) == 1


# ---------------------------------------------------------------- latent arithmetic


def test_attribute_vector_and_analogy_latent_by_hand():
    source, target = torch.tensor([[0.0, 2.0], [2.0, 0.0]]), torch.tensor([[3.0, 3.0]])
    assert torch.equal(attribute_vector(source, target), torch.tensor([2.0, 2.0]))
    a, b, c = torch.tensor([1.0, 0.3]), torch.tensor([2.0, 0.1]), torch.tensor([0.7, 5.0])
    assert torch.allclose(analogy_latent(a, b, c), torch.tensor([1.7, 4.8]))
    assert torch.equal(analogy_latent(a, a, c), c)
    with pytest.raises(ValueError, match="latent sizes"):
        attribute_vector(source, torch.zeros(1, 3))


def test_transfer_with_strength_zero_is_reconstruction(random_pipeline, monkeypatch):
    sentences, source, target = ["the cat sat", "a big dog ran"], ["the red mat"], ["a blue rug on the mat"]
    reconstructions = random_pipeline.reconstruct(sentences)
    assert random_pipeline.transfer(sentences, source, target, strength=0.0) == reconstructions
    seen = []
    decode = random_pipeline.decode
    monkeypatch.setattr(
        random_pipeline, "decode", lambda z, *args, **options: seen.append(z) or decode(z, *args, **options)
    )
    vector = torch.tensor([1.0, -2.0, 0.5, 3.0])
    random_pipeline.transfer(sentences, vector=vector, strength=2.0)
    assert torch.allclose(seen[-1], random_pipeline.encode(sentences)[0] + 2.0 * vector)
    with pytest.raises(ValueError, match="attribute vector"):
        random_pipeline.transfer(sentences)
    with pytest.raises(ValueError, match="not both"):
        random_pipeline.transfer(sentences, source, target, vector=vector)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        random_pipeline.transfer(sentences, vector=torch.zeros(3))


def test_analogy_with_a_equal_to_b_decodes_c(random_pipeline):
    c = "a small dog ran under the rug"
    assert random_pipeline.analogy("the cat sat", "the cat sat", c) == random_pipeline.reconstruct([c])[0]
    assert isinstance(random_pipeline.analogy("the cat", "a dog", "the mat", strategy="beam"), str)


# ---------------------------------------------------------------- scores


def test_scores_come_back_in_input_order(random_pipeline):
    scores = random_pipeline.score(DISTINCT_LENGTHS, iw_samples=5)
    order = list(range(len(DISTINCT_LENGTHS)))
    random.Random(0).shuffle(order)
    shuffled = random_pipeline.score([DISTINCT_LENGTHS[i] for i in order], iw_samples=5)
    for position, index in enumerate(order):
        assert shuffled[position]["sentence"] == DISTINCT_LENGTHS[index]
        for key in ("nll", "neg_elbo", "kl", "tokens"):
            assert shuffled[position][key] == pytest.approx(scores[index][key], rel=1e-5)
    assert [score["tokens"] for score in scores] == [i + 2 for i in range(len(DISTINCT_LENGTHS))]
    assert all(s["nll_per_token"] == pytest.approx(s["nll"] / s["tokens"]) for s in scores)


def test_mean_score_equals_evaluate(random_pipeline):
    split = TokenizedSplit(input_ids=random_pipeline._token_ids(make_sentences(10, seed=6)))
    scores = score_sentences(random_pipeline.model, split, iw_samples=6, batch_size=4, seed=3)
    results = evaluate(
        random_pipeline.model,
        random_pipeline.tokenizer,
        split,
        iw_samples=6,
        batch_size=4,
        seed=3,
        num_diversity_samples=0,
        compute_bleu=False,
        show_progress=False,
    )
    assert np.mean([s["nll"] for s in scores]) == pytest.approx(results["nll"], rel=1e-9)
    assert np.mean([s["neg_elbo"] for s in scores]) == pytest.approx(results["neg_elbo"], rel=1e-9)


def test_importance_weighted_nll_is_below_the_neg_elbo(pipeline):
    scores = pipeline.score(make_sentences(20, seed=8), iw_samples=200)
    assert all(score["kl"] >= 0 for score in scores)
    assert sum(s["nll"] for s in scores) <= sum(s["neg_elbo"] for s in scores)


def test_language_model_scores_are_exact(random_pipeline):
    torch.manual_seed(1)
    model = TextVAEModel(TextVAEConfig(vocab_size=len(random_pipeline.tokenizer), latent_dim=0)).eval()
    split = TokenizedSplit(input_ids=random_pipeline._token_ids(DISTINCT_LENGTHS))
    scores = score_sentences(model, split, iw_samples=3)
    assert scores == score_sentences(model, split, iw_samples=50, seed=9)
    for ids, score in zip(split.input_ids, scores, strict=True):
        with torch.no_grad():
            rec, _ = model.reconstruction_loss(
                torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), None
            )
        assert score["nll"] == score["neg_elbo"] == pytest.approx(float(rec[0]), rel=1e-5)
        assert score["kl"] == 0.0


def test_auroc_by_hand():
    # Pairs (out > in): 0.8 beats all three, 0.3 beats only 0.1: 4 of 6.
    assert auroc([0.1, 0.4, 0.35], [0.8, 0.3]) == pytest.approx(4 / 6)
    assert auroc([1.0, 2.0], [3.0]) == 1.0
    with pytest.raises(ValueError, match="both sides"):
        auroc([], [1.0])


# ---------------------------------------------------------------- probes


def separable(count: int, seed: int) -> tuple[np.ndarray, list[int], list[str]]:
    """Two classes apart along the first of three feature dimensions, and texts with class-specific words."""
    rng = np.random.default_rng(seed)
    labels = [i % 2 for i in range(count)]
    features = 0.1 * rng.normal(size=(count, 3)) + np.array([[4.0, 0.0, 0.0]]) * np.array(labels)[:, None]
    # A class word in every text (a bag of words cannot place unseen words), then another of its class.
    words = {0: ["cold", "rude"], 1: ["tasty", "kind"]}
    texts = [("great " if label else "awful ") + str(rng.choice(words[label])) for label in labels]
    return features, labels, texts


def test_probes_are_perfect_on_a_separable_set():
    train_x, train_y, train_texts = separable(40, seed=0)
    test_x, test_y, test_texts = separable(20, seed=1)
    latent = probe_accuracy(train_x, train_y, test_x, test_y, num_labels=(2, 10, None), repeats=3)
    tfidf = tfidf_probe_accuracy(
        train_texts, train_y, test_texts, test_y, num_labels=(2, 10, None), repeats=3
    )
    for results in (latent, tfidf):
        assert [r["num_labels"] for r in results] == [2, 10, None]
        assert [r["num_examples"] for r in results] == [2, 10, 40]
        assert [len(r["accuracies"]) for r in results] == [3, 3, 1]
        assert all(r["accuracy"] == 1.0 and r["std"] == 0.0 for r in results)


def test_label_draws_are_stratified_repeatable_and_seeded():
    labels = ["a"] * 30 + ["b"] * 3 + ["c"] * 2
    draws = draw_label_subsets(labels, [3, 10, None], repeats=4, seed=1)
    assert json.dumps([(n, [d.tolist() for d in s]) for n, s in draws]) == json.dumps(
        [(n, [d.tolist() for d in s]) for n, s in draw_label_subsets(labels, [3, 10, None], 4, 1)]
    )
    for count, subsets in draws[:2]:
        for indices in subsets:
            assert len(indices) == len(set(indices.tolist())) == count
            assert {labels[i] for i in indices} == {"a", "b", "c"}
    assert draws[0][1][0].tolist() != draw_label_subsets(labels, [3], 1, seed=2)[0][1][0].tolist()
    assert draws[2][1][0].tolist() == list(range(len(labels)))


@pytest.mark.parametrize(
    "labels, num_labels, message",
    [
        ([1, 1, 1], [2], "at least two classes"),
        ([0, 1, 0, 1], [5], "asked for 5 labelled examples but only 4 exist"),
        ([0, 1, 2, 0], [2], "cannot cover the 3 classes"),
        ([0, 1, 0, 1], [0], "positive integer"),
    ],
)
def test_bad_probe_requests_are_refused(labels, num_labels, message):
    features = np.zeros((len(labels), 2))
    with pytest.raises(ValueError, match=message):
        probe_accuracy(features, labels, features, labels, num_labels=num_labels)


def test_pipeline_probe_reports_latent_and_tfidf(pipeline):
    train, test = make_sentences(40, seed=10), make_sentences(10, seed=11)
    label = lambda sentence: int("cat" in sentence.split())  # noqa: E731
    results = pipeline.probe(train, [label(s) for s in train], test, [label(s) for s in test], (4, None), 2)
    assert set(results) == {"latent", "tfidf"}
    assert [r["num_labels"] for r in results["tfidf"]] == [4, None]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in results["latent"])
    with pytest.raises(ValueError, match="only 40 exist"):
        pipeline.probe(train, [label(s) for s in train], test, [label(s) for s in test], (100,))
