"""Target rate: a PI controller that sets the KL weight each step so that the KL follows a chosen target.

ControlVAE (Shao et al. 2020, github.com/shj1987/ControlVAE-ICML2020), which its authors evaluated on
PTB: with `e_t = target_t - KL_t` the error on the batch's KL,

    beta_t = Kp / (1 + exp(e_t)) + I_t,        I_t = I_{t-1} - Ki * e_t,

clipped to [beta_min, beta_max]. The non-linear proportional term is near 0 while the KL is below the
target and near Kp above it; the integral term does the steady work, and stops integrating while beta sits
at a bound (anti-windup), so it reacts at once when the KL crosses the target again.

Why this and not a Lagrange multiplier (GECO, Rezende & Viola 2018)? GECO constrains the
reconstruction error, whose reachable value the user cannot know in advance, and its multiplier update is
a pure integral term, which oscillates more. A KL target is a number of nats the user can choose (the
rate), and ControlVAE's bounded PI controller settles on it on PTB. The controller's state (integral,
last beta, step) is saved in every checkpoint, so a resumed run repeats the same weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


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
