"""What each torchrun process runs for tests/test_distributed.py: several distributed scenarios in one launch.

`python -m torch.distributed.run --nproc_per_node 2 tests/distributed_worker.py SPEC.json`, where the spec
names the scenarios' configs and folders. Starting Python, torch and transformers costs most of a launch,
so one launch runs them all, in this order:

1. train `config` to `max_steps` in `whole`;
2. train it to `stop_steps` in `stopped`, copy that run to `stopped_copy` (for the test to resume in one
   process), resume it here to `max_steps`;
3. resume the one-process run `resume_single` (of `config2`) here, to its end;
4. evaluate the run of step 2 on `corpus`, saving the results in the run folder;
5. train `config` with streaming to `max_steps` in `streaming`;
6. train `config` with aggressive encoder updates (He et al. 2019) to `max_steps` in `aggressive`;
7. train `config` with `max_minutes` in `timeboxed`, the second process's clock stopped: the first
   process's clock decides, and both stop after the same step.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import textvae.training.trainer as trainer_module  # noqa: E402
from textvae import distributed  # noqa: E402
from textvae.evaluation.run import evaluate_run  # noqa: E402
from textvae.training.config import TrainConfig  # noqa: E402
from textvae.training.run import train  # noqa: E402


def main(spec_path: str) -> None:
    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    config = TrainConfig(**spec["config"])
    stopped, copy = Path(spec["stopped"]), Path(spec["stopped_copy"])
    train(TrainConfig(**{**config.to_dict(), "max_steps": spec["max_steps"]}), output_dir=spec["whole"])
    train(TrainConfig(**{**config.to_dict(), "max_steps": spec["stop_steps"]}), output_dir=stopped)
    if int(os.environ["RANK"]) == 0:
        shutil.copytree(stopped, copy)
    train(None, resume=stopped, overrides={"max_steps": spec["max_steps"]})
    train(None, resume=spec["resume_single"])
    evaluate_run(stopped, data=spec["corpus"], **spec["evaluate"])
    streamed = {**config.to_dict(), "max_steps": spec["max_steps"]}
    streamed["data"] = {**streamed["data"], "streaming": True}
    train(TrainConfig(**streamed), output_dir=spec["streaming"])
    aggressive = {**config.to_dict(), "max_steps": spec["max_steps"], **spec["aggressive_options"]}
    train(TrainConfig(**aggressive), output_dir=spec["aggressive"])
    if int(os.environ["RANK"]) == 1:
        trainer_module._clock = lambda: 0.0  # this process alone would never run out of time
    timed = {**config.to_dict(), "max_minutes": spec["max_minutes"]}
    train(TrainConfig(**timed), output_dir=spec["timeboxed"])
    assert distributed.world_size() == int(os.environ["WORLD_SIZE"])  # one group served every call


if __name__ == "__main__":
    main(sys.argv[1])
