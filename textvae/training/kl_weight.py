"""The KL weight of every step, in one place and behind one interface: schedules and a target rate.

Every KL weight offers `weight(step)` (the step counted from the VAE's first one), `update(kl)` (the batch
KL of the step just taken), `reached` (whether the KL has reached its target, always true for a schedule),
`figures()` (what the logs show of it), `out_of_reach(valid_kl)` and `state_dict()` / `load_state_dict()`
(what a checkpoint keeps). `make_kl_weight` chooses one from a `TrainConfig`, once (diffusers'
`schedulers/`: many schedules behind one interface).

- `KLSchedule`: a weight set by the step alone: constant; linear from kl_start to beta (Bowman et al. 2016;
  He et al. 2019); logistic `beta / (1 + exp(-k (step - warmup / 2)))` (Bowman et al. 2016); cyclical, cycles
  that rise linearly to beta over a share of each cycle and hold it (Fu et al. 2019).
- `KLController`: a target rate, a PI controller that sets the weight each step so that the KL follows a
  chosen target. ControlVAE (Shao et al. 2020, github.com/shj1987/ControlVAE-ICML2020), which its authors
  evaluated on PTB: with `e_t = target_t - KL_t` the error on the batch's KL,

      beta_t = Kp / (1 + exp(e_t)) + I_t,        I_t = I_{t-1} - Ki * e_t,

  clipped to [beta_min, beta_max]. The non-linear proportional term is near 0 while the KL is below the
  target and near Kp above it; the integral term does the steady work, and stops integrating while beta sits
  at a bound (anti-windup), so it reacts at once when the KL crosses the target again.
- `NoKLWeight`: 0, for a model without a KL term (a language model, a deterministic autoencoder).

Why a controller and not a Lagrange multiplier (GECO, Rezende & Viola 2018)? GECO constrains the
reconstruction error, whose reachable value the user cannot know in advance, and its multiplier update is
a pure integral term, which oscillates more. A KL target is a number of nats the user can choose (the
rate), and ControlVAE's bounded PI controller settles on it on PTB. The controller's state (integral,
last beta, step) is saved in every checkpoint, so a resumed run repeats the same weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

KL_SCHEDULES = ("constant", "linear", "logistic", "cyclical")


@dataclass
class KLSchedule:
    """A KL weight set by the step alone (see the module's docstring for each kind).

    total_steps: the VAE's steps in all (cyclical lays its cycles over them).
    """

    kind: str = "linear"
    beta: float = 1.0
    start: float = 0.0
    warmup_steps: int = 10000
    logistic_slope: float = 0.0025
    cycles: int = 4
    cycle_ratio: float = 0.5
    total_steps: int = 0
    reached = True  # a schedule has no target to reach

    def __post_init__(self) -> None:
        if self.kind not in KL_SCHEDULES:
            raise ValueError(f"kl_schedule must be one of {', '.join(KL_SCHEDULES)}, got {self.kind!r}")

    def weight(self, step: int) -> float:
        """The weight at VAE step `step` (0-based)."""
        beta = self.beta
        if self.kind == "constant":
            return beta
        if self.kind == "linear":
            if self.warmup_steps == 0:
                return beta
            return min(beta, self.start + (beta - self.start) * step / self.warmup_steps)
        if self.kind == "logistic":
            exponent = -self.logistic_slope * (step - self.warmup_steps / 2)
            return beta / (1.0 + math.exp(min(exponent, 700.0)))
        period = max(self.total_steps / self.cycles, 1.0)
        position = (step % period) / period
        return beta * min(1.0, position / self.cycle_ratio)

    def update(self, kl: float) -> None:
        """A schedule does not listen to the KL."""

    def figures(self) -> dict:
        return {}

    def out_of_reach(self, valid_kl: float) -> bool:
        return False

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore: the weight follows from the step."""


class NoKLWeight(KLSchedule):
    """Weight 0 at every step: a model with no KL term."""

    def __init__(self):
        super().__init__(kind="constant", beta=0.0)


@dataclass
class KLController:
    """The KL weight for each step, from the batch KL of the steps before it.

    target: KL target in nats per sentence (> 0); warmup_steps: the target rises linearly from 0 to
    `target` over this many steps (0: the whole target from the start); kp, ki: the gains (ControlVAE's
    text values); beta_min, beta_max: the bounds of the weight.
    """

    target: float
    warmup_steps: int = 0
    kp: float = 0.01
    ki: float = 1e-4
    beta_min: float = 0.0
    beta_max: float = 1.0
    integral: float = 0.0
    beta: float = 0.0
    step: int = 0
    reached: bool = False  # whether the batch KL has reached the full target once

    def __post_init__(self) -> None:
        for name in ("target", "kp", "ki", "beta_min", "beta_max", "integral", "beta"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"KL controller {name} must be finite, got {getattr(self, name)}")
        if self.target <= 0:
            raise ValueError(f"the KL target must be positive, got {self.target}")
        if self.kp < 0 or self.ki < 0:
            raise ValueError(f"the controller gains must be >= 0, got kp {self.kp}, ki {self.ki}")
        if not 0 <= self.beta_min <= self.beta_max:
            raise ValueError(f"need 0 <= beta_min <= beta_max, got {self.beta_min}, {self.beta_max}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    def weight(self, step: int) -> float:
        """The weight the last `update` set (0 before the first): the controller follows the KL, not the
        step."""
        return self.beta

    def figures(self) -> dict:
        """The weight and the target of the current step, for the logs."""
        return {"kl_weight": self.beta, "kl_target": self.current_target()}

    def out_of_reach(self, valid_kl: float) -> bool:
        """Whether the KL stays above the target with the weight at its bound, so the target cannot be met
        (at weight 1, the bag-of-words loss and free bits keep more than a low target in z)."""
        settled = self.step >= self.warmup_steps
        return settled and self.beta >= self.beta_max and valid_kl > 1.1 * self.target

    def current_target(self) -> float:
        """The target at this step: rising linearly over the warm-up, then constant."""
        if self.warmup_steps == 0:
            return self.target
        return self.target * min(1.0, (self.step + 1) / self.warmup_steps)

    def update(self, kl: float) -> float:
        """Feed the batch-mean KL of the step just taken; returns the weight for the next step."""
        if not math.isfinite(kl):
            raise ValueError(f"the KL fed to the controller must be finite, got {kl}")
        target = self.current_target()
        self.reached = self.reached or (self.step + 1 >= self.warmup_steps and kl >= target)
        error = target - kl
        proportional = self.kp / (1.0 + math.exp(min(error, 700.0)))
        integral = self.integral - self.ki * error
        beta = proportional + integral
        # Anti-windup: at a bound, the integral keeps its last value instead of running away.
        if self.beta_min < beta < self.beta_max:
            self.integral = integral
        self.beta = min(max(beta, self.beta_min), self.beta_max)
        self.step += 1
        return self.beta

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore the state saved with `state_dict` (the gains and target stay those of the run's config)."""
        for name in ("integral", "beta", "step", "reached"):
            setattr(self, name, state[name])


def make_kl_weight(config, total_steps: int, has_kl_term: bool = True):
    """The KL weight of a run (`config` a `TrainConfig`, which imports this module): `NoKLWeight` for a model without a KL term, the controller with a target
    rate (`target_kl`), else the schedule `kl_schedule` over the VAE's `total_steps`."""
    if not has_kl_term:
        return NoKLWeight()
    if config.target_kl is not None:
        return KLController(
            target=config.target_kl,
            warmup_steps=config.target_kl_warmup_steps,
            kp=config.kl_controller_kp,
            ki=config.kl_controller_ki,
            beta_max=config.beta,
        )
    return KLSchedule(
        kind=config.kl_schedule,
        beta=config.beta,
        start=config.kl_start,
        warmup_steps=config.kl_warmup_steps,
        logistic_slope=config.kl_logistic_slope,
        cycles=config.kl_cycles,
        cycle_ratio=config.kl_cycle_ratio,
        total_steps=total_steps,
    )
