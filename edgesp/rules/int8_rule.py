"""Host trainer for the int8 rule (:mod:`edgesp.int8`, the same numpy code the firmware is checked against):
``edgesp train --precision int8`` quantises the fresh float model and learns with integer SP (or the int8 BP
baseline for ``--rule bp``), one sample per update (a batch is a run of single-sample steps, in order)."""

from __future__ import annotations

import math

import numpy as np

from edgesp import int8
from edgesp.errors import SpecError
from edgesp.spec import ModelSpec

RULES = ("sigprop", "bp")
MAX_DECAY = 4  # a schedule slows the int8 rule by at most 2^-4


def to_int8_spec(spec: ModelSpec, params: dict[str, np.ndarray], config: int8.Int8Config | None = None):
    """A float spec + params → (spec carrying ``rule.params['int8']``, integer params as float32). Rule parameters
    ``int8_<setting>`` (e.g. ``--rule-param int8_margin=16``) override :class:`edgesp.int8.Int8Config`."""
    if spec.rule.name not in RULES:
        raise SpecError(f"--precision int8 trains with sigprop or bp, not {spec.rule.name!r}")
    plan, state = int8.quantise(spec, params, config)
    rest = {k: v for k, v in spec.rule.params.items() if not k.startswith("int8_")}
    spec8 = spec.replace_rule(params={**rest, int8.INT8_KEY: int8.settings_dict(plan)})
    return spec8, {k: v.astype(np.float32) for k, v in state.items()}


class Int8Trainer:
    """Trainer protocol over :class:`edgesp.int8.Int8Net` (inputs are float samples, quantised here)."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], seed: int = 0) -> None:
        plan, state, was_int8 = int8.from_checkpoint(spec, params)
        if not was_int8:
            raise SpecError("Int8Trainer needs an int8 spec (rule.params['int8']): use to_int8_spec first")
        self.spec = spec
        self.net = int8.Int8Net(plan, state)
        self.base_plan = plan
        self.bp = spec.rule.name == "bp"

    def set_lr_scale(self, scale: float) -> None:
        """A schedule's factor as a power of two: every lr shift + round(−log2 scale), at most + MAX_DECAY."""
        d = MAX_DECAY if scale <= 2.0**-MAX_DECAY else min(MAX_DECAY, max(0, round(-math.log2(scale))))
        self.net.plan = self.base_plan.slower(d)

    def _q(self, x: np.ndarray) -> np.ndarray:
        return int8.quantise_input(np.asarray(x).reshape(len(x), -1))

    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """One integer update per sample; returns the fraction of samples whose head hinge was violated."""
        viol = 0
        for xi, yi in zip(self._q(x), np.asarray(y), strict=True):
            f = (self.net.bp_step if self.bp else self.net.sp_step)(xi, int(yi))
            viol += f["head"]
        return {"head_hinge_violated": viol / max(len(y), 1)}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.stack([self.net.logits(xi) for xi in self._q(x)]).astype(np.float64)

    def params(self) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float32) for k, v in self.net.state(self.spec.param_shapes()).items()}


def make(spec: ModelSpec, params: dict[str, np.ndarray], seed: int = 0) -> Int8Trainer:
    return Int8Trainer(spec, params, seed)
