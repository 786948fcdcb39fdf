"""Learning rules behind one small contract, so the training loop, the CLI and the benchmarks treat them alike.

A rule module registers a factory ``make(spec, params, seed) -> Trainer`` under its rule names.
``Trainer``:
- ``train_step(x, y) -> dict[str, float]``: one update on a batch (numpy float32 inputs shaped
  ``(B, *spec.input_shape)``, int64 labels); returns named losses.
- ``predict(x) -> np.ndarray``: logits (B, C); needs no labels.
- ``params() -> dict[str, np.ndarray]``: the current weights, named as ``spec.param_shapes()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

import numpy as np

from edgesp.errors import SpecError
from edgesp.spec import RULES, ModelSpec


class Trainer(Protocol):
    def train_step(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def params(self) -> dict[str, np.ndarray]: ...


# rule name -> module that defines make(spec, params, seed)
_RULE_MODULES = {
    "sigprop": "edgesp.rules.sigprop",
    "bp": "edgesp.rules.baselines",
    "fa": "edgesp.rules.baselines",
    "dfa": "edgesp.rules.baselines",
    "local": "edgesp.rules.baselines",
    "sp-voltage": "edgesp.rules.spiking_rules",
    "sp-surrogate": "edgesp.rules.spiking_rules",
    "sp-online": "edgesp.rules.spiking_rules",
    "bptt": "edgesp.rules.spiking_rules",
    "rtrl": "edgesp.rules.spiking_rules",
    "eprop": "edgesp.rules.eprop",
    "ifa": "edgesp.rules.feedback_rules",
    "bdfa": "edgesp.rules.feedback_rules",
    "kp": "edgesp.rules.feedback_rules",
    "wm": "edgesp.rules.feedback_rules",
    "tp": "edgesp.rules.feedback_rules",
    "dtp": "edgesp.rules.feedback_rules",
    "dfc": "edgesp.rules.feedback_rules",
}
assert set(_RULE_MODULES) == set(RULES)
SPIKING_RULE_MODULES = ("edgesp.rules.spiking_rules", "edgesp.rules.eprop")


def make_trainer(spec: ModelSpec, params: dict[str, np.ndarray], seed: int = 0) -> Trainer:
    name = spec.rule.name
    if "int8" in spec.rule.params:  # an int8 model (edgesp train --precision int8): the integer rule's trainer
        from edgesp.rules.int8_rule import make as make_int8

        return make_int8(spec, params, seed)
    if name not in _RULE_MODULES:
        raise SpecError(f"unknown rule {name!r}; choose one of {', '.join(RULES)}")
    spiking_rule = _RULE_MODULES[name] in SPIKING_RULE_MODULES
    if spec.is_spiking and not spiking_rule:
        raise SpecError(
            f"rule {name!r} is for non-spiking models; for a spiking model use one of "
            "sp-voltage, sp-surrogate, sp-online, bptt, rtrl, eprop"
        )
    if spiking_rule and not spec.is_spiking:
        raise SpecError(f"rule {name!r} needs a spiking model (--model snn)")
    module = importlib.import_module(_RULE_MODULES[name])
    make: Callable[..., Trainer] = module.make
    return make(spec, params, seed)
