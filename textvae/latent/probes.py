"""Few-label probes of the latent space: a linear classifier on the posterior means against TF-IDF.

The few-label linear probe of Li et al. (2020, Optimus): N labelled training sentences drawn `repeats`
times (`draw_label_subsets`), a logistic regression fitted on their `mu` (`probe_accuracy`) and, on the same
draws, on their TF-IDF vectors (`tfidf_probe_accuracy`), and the test accuracies as a table. scikit-learn is
imported where needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def draw_label_subsets(
    labels: Sequence, num_labels: Sequence[int | None], repeats: int = 5, seed: int = 0
) -> list[tuple[int | None, list[np.ndarray]]]:
    """For each N in `num_labels`, `repeats` index arrays of N labelled training examples.

    Each draw holds one example of every class (so a classifier can be fitted), the rest drawn uniformly
    without replacement; N = None takes every example, once. Draws depend only on (seed, N), so the latent
    and TF-IDF probes see the same examples.
    """
    labels = np.asarray(list(labels), dtype=object)
    classes = sorted({str(label) for label in labels})  # as the draws below compare them
    if len(classes) < 2:
        raise ValueError(f"probes need at least two classes in the training labels, got {classes}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    draws = []
    for count in num_labels:
        if count is None:
            draws.append((None, [np.arange(len(labels))]))
            continue
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"each number of labels must be a positive integer or None (all), got {count!r}")
        if count > len(labels):
            raise ValueError(f"asked for {count} labelled examples but only {len(labels)} exist")
        if count < len(classes):
            raise ValueError(
                f"{count} labelled examples cannot cover the {len(classes)} classes: ask for more"
            )
        rng = np.random.default_rng([seed, count])
        subsets = []
        for _ in range(repeats):
            order = rng.permutation(len(labels))
            _, first = np.unique(labels[order].astype(str), return_index=True)  # one of each class
            others = np.ones(len(order), dtype=bool)
            others[first] = False
            subsets.append(np.concatenate([order[first], order[others][: count - len(first)]]))
        draws.append((count, subsets))
    return draws


def _check_probe_data(train_x, train_labels, test_x, test_labels) -> None:
    if len(train_x) != len(train_labels):
        raise ValueError(f"{len(train_x)} training examples but {len(train_labels)} training labels")
    if len(test_x) != len(test_labels) or len(test_x) == 0:
        raise ValueError(
            f"need as many test labels as test examples (>= 1), got {len(test_x)}, {len(test_labels)}"
        )


def _fit_and_score(make_classifier, train_x, train_labels, test_x, test_labels, draws) -> list[dict]:
    """Fit one classifier per drawn subset; accuracy on the whole test set, averaged over the draws."""
    train_labels, test_labels = np.asarray(list(train_labels)), np.asarray(list(test_labels))
    results = []
    for count, subsets in draws:
        accuracies = []
        for indices in subsets:
            classifier = make_classifier().fit(train_x[indices], train_labels[indices])
            accuracies.append(float((classifier.predict(test_x) == test_labels).mean()))
        results.append(
            {
                "num_labels": count,
                "num_examples": len(subsets[0]),
                "accuracy": float(np.mean(accuracies)),
                "std": float(np.std(accuracies)),
                "accuracies": accuracies,
            }
        )
    return results


def probe_accuracy(
    train_features,
    train_labels: Sequence,
    test_features,
    test_labels: Sequence,
    num_labels: Sequence[int | None] = (100, 1000, None),
    repeats: int = 5,
    seed: int = 0,
) -> list[dict]:
    """Test accuracy of a logistic regression on (N, Z) features (e.g. `mu`) fitted on N labelled examples.

    The few-label linear probe of the latent space (as in Li et al. 2020, Optimus): an L2-regularised
    logistic regression on the raw features. They are not standardised: the latent's scale is meaningful
    (the prior is N(0, I)), and standardising would blow the near-constant means of inactive units
    (He et al. 2019) up to the size of the informative ones. Returns, per N in `num_labels` (None = all,
    once): num_labels, num_examples, accuracy (mean over `repeats` draws), std and the per-draw accuracies.
    """
    from sklearn.linear_model import LogisticRegression

    train_x = np.asarray(train_features, dtype=np.float64)
    test_x = np.asarray(test_features, dtype=np.float64)
    _check_probe_data(train_x, train_labels, test_x, test_labels)
    draws = draw_label_subsets(train_labels, num_labels, repeats, seed)
    return _fit_and_score(
        lambda: LogisticRegression(max_iter=5000), train_x, train_labels, test_x, test_labels, draws
    )


def tfidf_probe_accuracy(
    train_texts: Sequence[str],
    train_labels: Sequence,
    test_texts: Sequence[str],
    test_labels: Sequence,
    num_labels: Sequence[int | None] = (100, 1000, None),
    repeats: int = 5,
    seed: int = 0,
) -> list[dict]:
    """The bag-of-words baseline of `probe_accuracy`: TF-IDF features, the same draws, the same outputs.

    The vocabulary and IDF weights come from all training texts, unlabelled, as the VAE itself was trained
    without labels; only the classifier sees just the N drawn labels. Single-letter words are kept.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    _check_probe_data(train_texts, train_labels, test_texts, test_labels)
    draws = draw_label_subsets(train_labels, num_labels, repeats, seed)
    vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit(list(train_texts))
    return _fit_and_score(
        lambda: LogisticRegression(max_iter=5000),
        vectorizer.transform(list(train_texts)),
        train_labels,
        vectorizer.transform(list(test_texts)),
        test_labels,
        draws,
    )


def format_probe_table(results: dict[str, list[dict]]) -> str:
    """The probe results as a table: one row per number of labels, mean ± std over the draws."""

    def cell(result: dict) -> str:
        if len(result["accuracies"]) == 1:
            return f"{result['accuracy']:.3f}"
        return f"{result['accuracy']:.3f} ± {result['std']:.3f}"

    lines = [f"{'labels':<14}{'latent (mu)':<18}{'TF-IDF':<18}draws"]
    for latent, tfidf in zip(results["latent"], results["tfidf"], strict=True):
        count = latent["num_labels"]
        name = str(count) if count is not None else f"all ({latent['num_examples']})"
        lines.append(f"{name:<14}{cell(latent):<18}{cell(tfidf):<18}{len(latent['accuracies'])}")
    return "\n".join(lines)
