"""Figures of a run with matplotlib: training curves, KL per latent dimension, active units, a latent map.

matplotlib (and scikit-learn for the latent map) are optional: `pip install 'textvae[plot]'`. Figures
are built as bare `matplotlib.figure.Figure` objects on the Agg canvas, never through pyplot, so no
display is needed, no global figure registry holds them, and a user's own pyplot session is untouched.

`plot_run(run)` reads a run folder's `history.json` (one validation record per epoch) and
`metrics.jsonl` (a train record every `log_steps` steps) and writes the PNGs beside them; training
calls `write_training_plots(run)` after each epoch.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .run_files import HISTORY_NAME, METRICS_NAME, TRAIN_CONFIG_NAME, write_text_atomically

if TYPE_CHECKING:  # matplotlib is optional: imported where a figure is made
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

CURVES_NAME = "curves.png"
KL_PER_DIM_NAME = "kl_per_dim.png"
ACTIVE_UNITS_NAME = "active_units.png"
LATENT_MAP_NAME = "latent_map.png"
# Mean KL of a dimension is at least Var_x(mu) / 2 (KL_d = (mu^2 + s^2 - log s^2 - 1) / 2 >= mu^2 / 2), so
# a dimension below this KL fails the active-units test Var_x(mu) >= 0.01 (Burda et al. 2016; He et al. 2019).
INACTIVE_KL = 0.005


def _new_figure(width: float, height: float) -> Figure:
    """An empty Figure on the Agg canvas; ValueError naming the extra when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install 'textvae[plot]'") from None
    # Fixed margins, not layout="constrained": its solver measures every tick label, and took three times
    # as long (scripts/README.md, "Measurements behind the code").
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)  # attaches itself: savefig renders with Agg, no display involved
    return figure


def _mark_epochs(ax, history: list[dict]) -> None:
    """A top axis with the epoch number at the step where each epoch ended (at most ~10 labels)."""
    stride = max(1, len(history) // 10)
    shown = history[stride - 1 :: stride]
    top = ax.secondary_xaxis("top")
    top.set_xticks([record["step"] for record in shown], labels=[str(record["epoch"]) for record in shown])
    top.set_xlabel("epoch", fontsize="small")
    top.tick_params(labelsize="small")


def curves_figure(history: list[dict], train_records: list[dict]) -> Figure:
    """Four panels against the optimiser step: reconstruction, KL, -ELBO, and the KL weight.

    history: validation records (`step`, `epoch`, `rec`, `kl`, `neg_elbo`, `lr`), one per epoch, drawn with
    markers. train_records: train records (`step`, `loss`, `rec`, `kl`, `kl_weight`, `lr`). Lines are
    labelled "train rec", "validation rec", "train KL", "validation KL", "train -ELBO (rec + KL)",
    "train loss", "validation -ELBO", "KL weight", "learning rate".
    """
    from matplotlib.ticker import EngFormatter

    figure = _new_figure(11, 7.5)
    axes = figure.subplots(2, 2, sharex=True)
    train_steps = [record["step"] for record in train_records]
    valid_steps = [record["step"] for record in history]
    train_style = dict(linewidth=0.8, alpha=0.6)
    valid_style = dict(marker="o", markersize=4, linewidth=1.5)
    panels = [
        (axes[0, 0], "reconstruction: -log p(x|z)", "rec", "rec"),
        (axes[0, 1], "KL(q(z|x) || p(z))", "kl", "KL"),
    ]
    for ax, title, key, name in panels:
        ax.plot(train_steps, [r[key] for r in train_records], label=f"train {name}", **train_style)
        ax.plot(valid_steps, [r[key] for r in history], label=f"validation {name}", **valid_style)
        ax.set_title(title, y=1.14)  # above the epoch axis; a fixed y also skips a costly auto-placement
        ax.set_ylabel("nats / sentence")
    ax = axes[1, 0]
    # The loss minimised weighs the KL by the schedule (and free bits); -ELBO weighs it by 1.
    ax.plot(
        train_steps,
        [r["rec"] + r["kl"] for r in train_records],
        label="train -ELBO (rec + KL)",
        **train_style,
    )
    ax.plot(train_steps, [r["loss"] for r in train_records], label="train loss", **train_style)
    ax.plot(valid_steps, [r["neg_elbo"] for r in history], label="validation -ELBO", **valid_style)
    ax.set_title("-ELBO", y=1.0)
    ax.set_ylabel("nats / sentence")
    ax = axes[1, 1]
    ax.plot(train_steps, [r["kl_weight"] for r in train_records], label="KL weight", color="C3")
    ax.set_title("KL weight and learning rate", y=1.0)
    ax.set_ylabel("KL weight (beta)")
    rate = ax.twinx()
    rate.plot(
        train_steps, [r["lr"] for r in train_records], label="learning rate", color="C4", linestyle="--"
    )
    rate.set_ylabel("learning rate")
    if any(r["lr"] > 0 for r in train_records):
        rate.set_yscale("log")
    handles = ax.get_lines() + rate.get_lines()
    ax.legend(handles, [line.get_label() for line in handles], fontsize="small")
    for ax in axes.flat:
        if ax is not axes[1, 1]:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    for ax in axes[0]:  # the x axes are shared: epochs over the top row, steps under the bottom one
        _mark_epochs(ax, history)
    for ax in axes[1]:
        ax.set_xlabel("step")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 25k, not 25000 running into its neighbour
    figure.subplots_adjust(left=0.07, right=0.92, bottom=0.08, top=0.9, wspace=0.25, hspace=0.25)
    return figure


def kl_per_dimension_figure(
    kl_per_dim: Sequence[float], sort: bool = True, free_bits: float = 0.0, active_units: int | None = None
) -> Figure:
    """A bar per latent dimension: its KL, mean over the validation split (nats).

    sort: largest first (each bar labelled by its dimension index), else in index order. A dimension below
    `INACTIVE_KL` = 0.005 nats cannot pass the active-units test Var_x(E[z|x]) >= 0.01 (He et al. 2019):
    its bar is grey. `free_bits` > 0 draws the free-bits floor (Kingma et al. 2016).
    """
    values = [float(value) for value in kl_per_dim]
    if not values:
        raise ValueError("kl_per_dim is empty: a model without a latent has no KL per dimension")
    order = sorted(range(len(values)), key=lambda d: -values[d]) if sort else list(range(len(values)))
    figure = _new_figure(max(6.0, min(14.0, 0.25 * len(values) + 3)), 4.5)
    ax = figure.subplots()
    heights = [values[d] for d in order]
    colours = ["C0" if value >= INACTIVE_KL else "0.6" for value in heights]
    ax.bar(range(len(values)), heights, color=colours, label="KL per dimension")
    ax.axhline(INACTIVE_KL, color="0.3", linestyle=":", label="KL < 0.005 => Var(mu) < 0.01: inactive")
    if free_bits > 0:
        ax.axhline(free_bits, color="C3", linestyle="--", label=f"free bits ({free_bits:g})")
    if len(values) <= 64:
        ax.set_xticks(range(len(values)), labels=[str(d) for d in order], fontsize="small")
    ax.set_xlabel("latent dimension" + (" (sorted by KL)" if sort else ""))
    ax.set_ylabel("KL (nats, mean over sentences)")
    # Linear near 0, logarithmic above: collapsed and informative dimensions both stay visible.
    ax.set_yscale("symlog", linthresh=1e-3)
    au = f", {active_units} active units" if active_units is not None else ""
    ax.set_title(f"KL per latent dimension: {sum(values):.2f} nats in all{au}", y=1.0)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return figure


def active_units_figure(history: list[dict], latent_dim: int | None = None) -> Figure:
    """Active units (He et al. 2019) and the validation KL across epochs, from the validation records."""
    records = [record for record in history if "au" in record]
    if not records:
        raise ValueError("the history has no active units: a model without a latent has none to plot")
    epochs = [record["epoch"] for record in records]
    figure = _new_figure(7, 4.5)
    ax = figure.subplots()
    ax.plot(epochs, [record["au"] for record in records], marker="o", color="C0", label="active units")
    if latent_dim:
        ax.axhline(latent_dim, color="C0", linestyle=":", label=f"latent dimensions ({latent_dim})")
        ax.set_ylim(0, latent_dim * 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("active units (Var(mu) >= 0.01)")
    kl = ax.twinx()
    kl.plot(epochs, [record["kl"] for record in records], marker="s", color="C1", label="validation KL")
    kl.set_ylabel("validation KL (nats / sentence)")
    handles = ax.get_lines() + kl.get_lines()
    ax.legend(handles, [line.get_label() for line in handles], fontsize="small", loc="lower right")
    ax.set_title("active units and KL", y=1.0)
    ax.grid(alpha=0.3)
    return figure


def project_latents(mu) -> tuple:
    """Posterior means on their first two principal components: `(points (N, 2), variance_ratios)`, one ratio
    per principal component (two, or one for a one-dimensional latent).

    mu: (N, Z) array-like (a tensor is moved to the CPU), N >= 2. A one-dimensional latent gets a second
    axis of zeros and a single ratio. The latent map figure and the explorer's map both draw these points.
    """
    import numpy as np

    try:
        from sklearn.decomposition import PCA
    except ImportError:
        raise ValueError("the latent map needs scikit-learn: pip install 'textvae[plot]'") from None
    if hasattr(mu, "detach"):
        mu = mu.detach().float().cpu().numpy()
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] < 2:
        raise ValueError(f"mu must be (N, Z) with N >= 2 sentences, got shape {mu.shape}")
    components = min(2, mu.shape[1])
    pca = PCA(n_components=components).fit(mu)
    points = pca.transform(mu)  # (N, components)
    ratios = [float(ratio) for ratio in pca.explained_variance_ratio_]
    if components == 1:  # a one-dimensional latent: the second axis is empty
        points = np.column_stack([points[:, 0], np.zeros(len(points))])
    return points, ratios


def sentence_lengths(sentences: Sequence[str]) -> list[int]:
    """Words (whitespace-separated) per sentence: the default colour of a latent map."""
    return [len(sentence.split()) for sentence in sentences]


def latent_map_figure(mu, colour_values, colour_label: str, categorical: bool) -> Figure:
    """Posterior means projected on their first two principal components, one point per sentence.

    mu: (N, Z) array-like (a tensor is moved to the CPU), N >= 2. colour_values: (N,) numbers (sentence
    length, a score: a colour bar) or, with `categorical`, labels (a legend, one colour each).
    """
    import numpy as np

    values = list(colour_values)
    points, ratios = project_latents(mu)
    if len(values) != len(points):
        raise ValueError(f"got {len(values)} colour values for {len(points)} posterior means")
    figure = _new_figure(7, 6)
    ax = figure.subplots()
    if categorical:
        labels = sorted({str(value) for value in values})
        for index, label in enumerate(labels):
            chosen = [i for i, value in enumerate(values) if str(value) == label]
            ax.scatter(*points[chosen].T, s=8, alpha=0.7, color=f"C{index % 10}", label=label)
        if len(labels) <= 20:
            ax.legend(title=colour_label, fontsize="small", markerscale=2)
    else:
        scatter = ax.scatter(*points.T, s=8, alpha=0.7, c=np.asarray(values, dtype=float), cmap="viridis")
        figure.colorbar(scatter, ax=ax, label=colour_label)
    ax.set_xlabel(f"PC1 ({100 * ratios[0]:.0f}% of the variance)")
    ax.set_ylabel(f"PC2 ({100 * ratios[1]:.0f}% of the variance)" if len(ratios) == 2 else "(latent is 1-D)")
    ax.set_title(f"posterior means (PCA), {len(values)} sentences, coloured by {colour_label}", y=1.0)
    ax.grid(alpha=0.3)
    return figure


def read_run_records(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """(validation history, train records) of a run folder; a torn last line of metrics.jsonl is skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run folder not found: {run_dir}")
    path = run_dir / HISTORY_NAME
    history = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    if not history:
        raise ValueError(f"{run_dir} has no validation history yet: train at least one epoch")
    train_records = []
    path = run_dir / METRICS_NAME
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # training was killed while writing it
                break
            raise ValueError(f"{path} line {number} is not JSON") from None
        if record.get("split") == "train":
            train_records.append(record)
    return history, train_records


def save_figure(figure: Figure, path: Path) -> Path:
    """Write a figure as PNG through a temporary name and a rename: a reader never sees half a file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_text_atomically(path, buffer.getvalue())
    return path


def run_figures(run_dir: str | Path, latent_map=None) -> dict[str, Figure]:
    """A run's figures by file name, in the order `plot_run` writes them (see there); nothing is written."""
    run_dir = Path(run_dir)
    history, train_records = read_run_records(run_dir)
    figures = {CURVES_NAME: curves_figure(history, train_records)}
    last = history[-1]
    if last.get("kl_per_dim"):
        free_bits = 0.0
        if (run_dir / TRAIN_CONFIG_NAME).is_file():
            saved = json.loads((run_dir / TRAIN_CONFIG_NAME).read_text(encoding="utf-8"))
            free_bits = float(saved.get("free_bits") or 0.0)
        figures[KL_PER_DIM_NAME] = kl_per_dimension_figure(
            last["kl_per_dim"], free_bits=free_bits, active_units=last.get("au")
        )
    if any("au" in record for record in history):
        latent_dim = len(last["kl_per_dim"]) if last.get("kl_per_dim") else None
        figures[ACTIVE_UNITS_NAME] = active_units_figure(history, latent_dim)
    if latent_map is not None:
        figures[LATENT_MAP_NAME] = latent_map_figure(*latent_map)
    return figures


def plot_run(run_dir: str | Path, output_dir: str | Path | None = None, latent_map=None) -> list[Path]:
    """Write a run's figures as PNGs into `output_dir` (default: the run folder); return their paths.

    curves.png always; kl_per_dim.png when the last validation record has `kl_per_dim`; active_units.png
    when the history has active units (a model with a latent); latent_map.png when `latent_map` is a
    `(mu (N, Z), colour_values (N,), colour_label, categorical)` tuple for `latent_map_figure`.
    """
    figures = run_figures(run_dir, latent_map)
    output = Path(output_dir) if output_dir is not None else Path(run_dir)
    output.mkdir(parents=True, exist_ok=True)
    return [save_figure(figure, output / name) for name, figure in figures.items()]


def write_training_plots(run_dir: str | Path) -> bool:
    """The figures of a run in training (no latent map); never raises. False when matplotlib is missing.

    Called after each epoch. A plotting failure is logged as a warning: a figure is not worth a run.
    """
    if importlib.util.find_spec("matplotlib") is None:
        logger.info("matplotlib is not installed: no training plots (pip install 'textvae[plot]')")
        return False
    try:
        plot_run(run_dir)
    except Exception as error:  # any matplotlib or file-system error: training goes on
        logger.warning(
            "could not write the training plots in %s: %s: %s", run_dir, type(error).__name__, error
        )
    return True
