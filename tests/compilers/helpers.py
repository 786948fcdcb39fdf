"""Shared builders for the compiler tests."""

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
