"""Shared builders for the compiler tests."""

import numpy as np

from edgesp.functional import init_params
from edgesp.presets import build_spec
from edgesp.spec import OptimizerSpec, RuleSpec


def make(preset="mlp", shape=(64,), loss="v9", opt="adam", lr=1e-2, temperature=0.1, **kw):
    """A small spec + init. The parity tolerances of the compiler tests were set at temperature 0.1 (the logits'
    scale sets the gradients' scale), so it is pinned here, independent of the RuleSpec default."""
    spec = build_spec(
        preset,
        shape,
        10,
        width=kw.pop("width", 32),
        depth=kw.pop("depth", 2),
        channels=kw.pop("channels", 4),
        rule=RuleSpec(loss=loss, temperature=temperature, optimizer=OptimizerSpec(name=opt, lr=lr)),
        **kw,
    )
    return spec, init_params(spec, 0)


def online_sgd_two_samples(spec, params):
    """Two samples (batch 1) through the on-chip rule's numpy reference in floating_pt and through edgesp's torch
    sp-online trainer (SGD without momentum, lr 0.05, loss v1): returns (reference net, trainer params)."""
    from compilers.lava.quant import lower
    from edgesp.rules.spiking_rules import make
    from firmware_sim.lava.network import prepare_inputs
    from firmware_sim.lava.reference import ReferenceNet

    spec = spec.replace_rule(name="sp-online", loss="v1", optimizer=OptimizerSpec(name="sgd", lr=0.05, momentum=0.0))
    desc, _ = lower(spec, params, "floating_pt")
    x = np.random.default_rng(1).standard_normal((2, 12)).astype(np.float32) + 0.5
    y = np.array([1, 2])
    ref = ReferenceNet(desc)
    ref.run(prepare_inputs(desc, x), y, np.ones(2, bool))
    trainer = make(spec, params, 0)
    for n in range(2):
        trainer.train_step(x[n : n + 1], y[n : n + 1])
    return ref, trainer.params()
