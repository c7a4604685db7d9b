"""`textvae train` (options from the `TrainConfig` and architecture tables) and `textvae fit-prior`."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from ..config_fields import read_config_file
from ..data.config import DataConfig, split_flat_options
from ..models.architecture import ARCHITECTURE_OPTIONS
from ..training.config import TrainConfig
from .common import (
    add_device_option,
    add_run_argument,
    add_seed_option,
    flag,
    is_main_process,
    positive_int,
    quiet_libraries,
)

DEFAULT_OUTPUT_DIR = "runs/textvae"


def _integer_list(text: str) -> list[int]:
    """A comma-separated list of integers ("2000,8000") -> [2000, 8000]; whether the values make sense for
    the option (increasing, in range) is the config's check."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas (2000,8000), got {text!r}"
        ) from None
    return values


def _add_typed_option(group, name: str, annotation, default, help: str) -> None:
    """One flag for a config field, typed from its annotation; unset flags stay absent (SUPPRESS).

    A `list[int]` field takes its integers comma-separated in one argument (`--adaptive-cutoffs 2000,8000`).
    """
    text = str(annotation)
    if "(default:" not in help:  # some fields say what their default means ("no limit") themselves
        help = f"{help} (default: {default})"
    if text.startswith("list[int]"):
        group.add_argument(
            flag(name), type=_integer_list, default=argparse.SUPPRESS, metavar="INT,INT,...", help=help
        )
        return
    if "bool" in text:
        group.add_argument(
            flag(name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help
        )
        return
    kind = int if "int" in text else float if "float" in text else str
    group.add_argument(
        flag(name), type=kind, default=argparse.SUPPRESS, metavar=kind.__name__.upper(), help=help
    )


def add_parsers(commands) -> None:
    _add_train_parser(commands)
    _add_fit_prior_parser(commands)


def _add_train_parser(commands) -> None:
    parser = commands.add_parser(
        "train",
        help="train a text VAE (or its language model) on a corpus",
        description="Train a text VAE. Options come from --config FILE (YAML or JSON), overridden by flags. "
        "Run by torchrun (torchrun --nproc_per_node N -m textvae.cli train ...), N processes train one model "
        "(gloo on the CPU, NCCL with one GPU each); --batch-size stays the global batch.",
    )
    parser.add_argument(
        "--config",
        help="YAML or JSON file of training options (a `model:` mapping holds architecture options)",
    )
    parser.add_argument("--output-dir", "-o", help=f"run folder to create (default: {DEFAULT_OUTPUT_DIR})")
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in RUN from its last checkpoint (flags given override its saved options)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in --output-dir (only the files textvae wrote; anything else makes it refuse)",
    )
    data = parser.add_argument_group("data options (saved in train_config.json as its data mapping)")
    hints = typing.get_type_hints(DataConfig)
    for field in dataclasses.fields(DataConfig):
        name = field.metadata.get("flag", field.name)
        _add_typed_option(data, name, hints[field.name], field.default, field.metadata["help"])
    training = parser.add_argument_group("training options")
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name not in ("model", "data"):
            _add_typed_option(training, field.name, hints[field.name], field.default, field.metadata["help"])
    model = parser.add_argument_group("model options (saved in the model's config.json)")
    for name, option in ARCHITECTURE_OPTIONS.items():
        if name != "vocab_size":  # the tokenizer sets it
            _add_typed_option(model, name, option.type, option.default, option.help)
    parser.set_defaults(handler=run_train)


def _add_fit_prior_parser(commands) -> None:
    fit = commands.add_parser(
        "fit-prior",
        help="fit the aggregate-posterior prior of a trained run (for sample --prior aggregate)",
        description="Fit a Gaussian mixture to the posterior means of the run's training sentences, choosing "
        "the number of components on the validation sentences (Ghosh et al. 2020), and save it in the run "
        "folder as prior.safetensors / prior.json. Training does this at its end; this is for older runs.",
    )
    add_run_argument(fit)
    fit.add_argument(
        "--components",
        default="1,2,4,8,16,32",
        help="candidate numbers of mixture components, comma-separated (default: 1,2,4,8,16,32)",
    )
    fit.add_argument(
        "--covariance-type",
        choices=("full", "diag"),
        default="full",
        help="component covariances (default: full)",
    )
    fit.add_argument(
        "--max-train",
        type=positive_int,
        default=20_000,
        help="fit on at most this many training sentences, drawn with --seed (default: 20000)",
    )
    add_seed_option(fit, 0)
    add_device_option(fit)
    fit.set_defaults(handler=run_fit_prior)


def _train_values(args) -> tuple[dict, dict, dict]:
    """(training, data, model) option values of the flags given."""
    given = vars(args)
    train_names = {field.name for field in dataclasses.fields(TrainConfig)} - {"model", "data"}
    values = {name: given[name] for name in train_names if name in given}
    data_values = {}
    for field in dataclasses.fields(DataConfig):
        flag_name = field.metadata.get("flag", field.name)
        if flag_name in given:
            data_values[field.name] = given[flag_name]
    model_values = {name: given[name] for name in ARCHITECTURE_OPTIONS if name in given}
    return values, data_values, model_values


def run_train(args) -> None:
    values, data_values, model_values = _train_values(args)
    if args.resume:
        if model_values:
            raise ValueError(
                f"--resume keeps the run's architecture; drop {', '.join(flag(n) for n in model_values)}"
            )
        TrainConfig(**values)  # the flags' values are checked before anything heavy is imported
        if data_values:
            DataConfig(**data_values)
            values["data"] = data_values
        args.run_dir = Path(args.resume)
        quiet_libraries()
        from ..training.run import train

        run = train(None, resume=args.resume, overrides=values)
    else:
        file_values = read_config_file(args.config) if args.config else {}
        file_data, file_values = split_flat_options(file_values)
        merged = {**file_values, **values}
        merged["data"] = {**file_data, **data_values}
        merged["model"] = {**file_values.get("model", {}), **model_values}
        file_output_dir = merged.pop("output_dir", None)
        config = TrainConfig.from_dict(merged)
        args.run_dir = Path(args.output_dir or file_output_dir or DEFAULT_OUTPUT_DIR)
        quiet_libraries()
        from ..training.run import train

        run = train(config, output_dir=args.run_dir, overwrite=args.overwrite)
    if is_main_process():
        print(f"model saved in {run}")


def interrupted_hint(args) -> str:
    """What to do after Ctrl-C stopped training: resume from the last checkpoint, or start again."""
    from ..run_files import CHECKPOINT_PREFIX, TRAINER_STATE_NAME

    run_dir = getattr(args, "run_dir", None)
    if run_dir is None:
        return ""
    if any(Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*/{TRAINER_STATE_NAME}")):
        return f"; continue with: textvae train --resume {run_dir}"
    if Path(run_dir).is_dir() and any(Path(run_dir).iterdir()):
        return f"; no checkpoint was written yet: start again with --output-dir {run_dir} --overwrite"
    return ""


def run_fit_prior(args) -> None:
    try:
        components = tuple(int(part) for part in args.components.split(","))
    except ValueError:
        raise ValueError(
            f"--components must be positive integers separated by commas, got {args.components!r}"
        ) from None
    if not components or min(components) < 1:
        raise ValueError(
            f"--components must be positive integers separated by commas, got {args.components!r}"
        )
    quiet_libraries()
    from ..priors.fitting import fit_prior_for_run

    prior = fit_prior_for_run(
        args.run,
        components=components,
        covariance_type=args.covariance_type,
        max_train=args.max_train,
        seed=args.seed,
        device=args.device,
    )
    print(
        f"aggregate prior with {prior.n_components} components ({prior.covariance_type} covariances) saved in "
        f"{args.run}"
    )
