"""Training a run: `TrainConfig`, `train`, the `Trainer`, its step, the KL weight, validation.

`config.py` holds every option; `run.py` trains a run folder from start to end; `setup.py` builds the model,
optimiser and scheduler; `trainer.py` is the epoch loop; `step.py` one optimiser step and `aggressive.py`
He et al.'s aggressive encoder updates; `kl_weight.py` the KL weight; `validation.py` the per-epoch figures;
`callbacks.py` what else sees them (TensorBoard)."""

from ..lazy import lazy_face

_NAMES = {
    "TrainConfig": ".config",
    "read_config_file": "..config_fields",
    "train": ".run",
    "fit_final_prior": ".run",
    "prepare_run_dir": ".run",
    "PreparedData": ".setup",
    "build_model": ".setup",
    "make_optimizer": ".setup",
    "make_scheduler": ".setup",
    "prepare_data": ".setup",
    "resolve_device": ".setup",
    "Trainer": ".trainer",
    "KLController": ".kl_weight",
    "KLSchedule": ".kl_weight",
    "make_kl_weight": ".kl_weight",
    "validate": ".validation",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(globals(), _NAMES)
