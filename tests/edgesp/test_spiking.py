"""Spiking front end: LIF step semantics, input encodings, readout, and checkpoint round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgesp.checkpoint import load_checkpoint, save_checkpoint
from edgesp.encoding import Encoder, num_steps
from edgesp.functional import init_params, to_torch
from edgesp.presets import build_spec
from edgesp.rules import make_trainer
from edgesp.snn import BlockState, block_step, empty_readout, readout_decay, run
from edgesp.spec import LIF, RuleSpec, TemporalSpec
from edgesp.spiking import (
    LIFState,
    SpikeDerivativeUsed,
    lif_step,
    smooth_spike,
    strict_spike,
    surrogate_spike,
)


def _lif_numpy(layer: LIF, currents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent scalar-loop implementation of the LIF equations in the spec docstring."""
    steps, n = currents.shape
    u = np.zeros(n)
    v = np.zeros(n)
    spikes, pre = np.zeros((steps, n)), np.zeros((steps, n))
    for t in range(steps):
        for k in range(n):
            u[k] = (1 - layer.du) * u[k] + currents[t, k]
            v[k] = (1 - layer.dv) * v[k] + u[k] + layer.bias
            pre[t, k] = v[k]
            if not layer.spiking:
                spikes[t, k] = v[k]
                continue
            s = 1.0 if v[k] > layer.threshold else 0.0
            spikes[t, k] = s
            if s:
                v[k] = 0.0 if layer.reset == "zero" else v[k] - layer.threshold
    return spikes, pre


@pytest.mark.parametrize(
    "layer",
    [LIF(), LIF(du=0.3, dv=0.1, threshold=0.7, reset="subtract", bias=0.05), LIF(du=1.0, dv=0.5, spiking=False)],
)
@pytest.mark.parametrize("spike", [None, strict_spike, surrogate_spike(5.0)])
def test_lif_step_matches_scalar_reference(layer: LIF, spike) -> None:
    rng = np.random.default_rng(0)
    cur = rng.uniform(-0.5, 1.5, size=(30, 7))
    ref_s, ref_v = _lif_numpy(layer, cur)
    st = LIFState.zeros((7,), torch.float64)
    for t in range(30):
        s, v, st = lif_step(layer, torch.tensor(cur[t]), st, spike)
        # float64 both sides, same operation order: equal up to rounding of the last bit
        np.testing.assert_allclose(v.detach().numpy(), ref_v[t], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(s.detach().numpy(), ref_s[t])
    if layer.spiking:
        assert 0 < ref_s.mean() < 1  # the check exercised both spikes and silence


def test_spike_functions_forward_and_backward() -> None:
    v = torch.linspace(-1, 3, 41, dtype=torch.float64, requires_grad=True)
    hard = (v > 1.0).double()
    assert torch.equal(strict_spike(v, 1.0), hard)
    with pytest.raises(SpikeDerivativeUsed):
        strict_spike(v, 1.0).sum().backward()
    s = surrogate_spike(4.0)(v, 1.0)
    assert torch.equal(s.detach(), hard)  # forward is exactly the threshold
    (g,) = torch.autograd.grad(s.sum(), v)
    sig = torch.sigmoid(4.0 * (v.detach() - 1.0))
    torch.testing.assert_close(g, 4.0 * sig * (1 - sig))
    sm = smooth_spike(4.0)(v, 1.0)
    torch.testing.assert_close(sm.detach(), sig)


def _spec(encoding: str, shape: tuple[int, ...], t: int = 10, readout: str = "membrane", rule: str = "sp-voltage"):
    return build_spec(
        "snn",
        shape,
        3,
        width=8,
        depth=1,
        rule=RuleSpec(name=rule),
        temporal=TemporalSpec(time_steps=t, encoding=encoding, readout=readout, seed=3),
    )


def test_rate_encoding_probabilities_and_seed() -> None:
    spec = _spec("rate", (5,), t=4000)
    x = torch.tensor([[-2.0, -1.0, 0.0, 1.0, 2.0], [5.0, 5.0, 5.0, 5.0, 9.0]])
    enc = Encoder(spec, x)
    want = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(enc.p, want)  # per-sample min-max scaling
    steps = torch.stack([enc.step(t) for t in range(4000)])
    assert set(steps.unique().tolist()) <= {0.0, 1.0}
    # Bernoulli mean over 4000 draws: std ≤ 0.5/sqrt(4000) = 0.008; 0.03 is > 3.7 std
    assert (steps.mean(0) - want).abs().max() < 0.03
    again = Encoder(spec, x)  # default generator is seeded from temporal.seed: same spikes
    assert torch.equal(torch.stack([again.step(t) for t in range(10)]), steps[:10])
    other = Encoder(spec, x, torch.Generator().manual_seed(99))
    assert not torch.equal(torch.stack([other.step(t) for t in range(10)]), steps[:10])


def test_direct_and_sequence_encodings() -> None:
    spec = _spec("direct", (4,), t=3)
    x = torch.randn(2, 4)
    enc = Encoder(spec, x)
    assert num_steps(spec) == 3 and all(torch.equal(enc.step(t), x) for t in range(3))
    seq = _spec("sequence", (1, 6))
    assert seq.block_input_shape() == (1,) and num_steps(seq) == 6  # T = sequence length, not time_steps
    xs = torch.arange(12.0).reshape(2, 1, 6)
    enc = Encoder(seq, xs)
    for t in range(6):
        assert torch.equal(enc.step(t), xs[:, :, t])
    with pytest.raises(IndexError):
        enc.step(6)


@pytest.mark.parametrize("readout", ["membrane", "spike_count"])
def test_readout_matches_integrator_neuron(readout: str) -> None:
    """The head's logits equal a non-spiking LIF integrator (membrane) stepped by lif_step, or W·rate + b."""
    spec = _spec("rate", (6,), t=12, readout=readout)
    p = to_torch(init_params(spec, 1))
    p["blocks.0.weight"] = p["blocks.0.weight"] * 6  # make the hidden layer spike
    x = torch.randn(5, 6)
    logits = run(spec, x, p)
    enc, st = Encoder(spec, x), BlockState()
    integ = LIF(du=1.0, dv=1.0 - readout_decay(spec), spiking=False)
    vo = LIFState.zeros((5, 3))
    spikes = []
    for t in range(12):
        s, _, st = block_step(spec, 0, enc.step(t), p, st)
        spikes.append(s)
        _, v, vo = lif_step(integ, s @ p["head.weight"].T + p["head.bias"], vo)
    assert 0 < torch.stack(spikes).mean() < 1
    if readout == "membrane":
        torch.testing.assert_close(logits, v, rtol=1e-5, atol=1e-5)
    else:
        torch.testing.assert_close(logits, torch.stack(spikes).mean(0) @ p["head.weight"].T + p["head.bias"])
    assert empty_readout(spec, 5, x).e.shape == (5, 8)


@pytest.mark.parametrize("rule", ["sp-voltage", "sp-online", "bptt"])
def test_spiking_checkpoint_round_trip(tmp_path, rule: str) -> None:
    spec = _spec("rate", (6,), t=5, rule=rule)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 6)).astype(np.float32), rng.integers(0, 3, 16)
    tr = make_trainer(spec, init_params(spec, 0), 0)
    tr.train_step(x, y)
    path = save_checkpoint(tmp_path / "model.safetensors", spec, tr.params(), {"rule": rule})
    spec2, params2, extra = load_checkpoint(path)
    assert spec2 == spec and extra == {"rule": rule}
    assert spec2.temporal == spec.temporal and math.prod(params2["blocks.0.weight"].shape) == 48
    again = make_trainer(spec2, params2, 0)
    np.testing.assert_array_equal(again.predict(x), tr.predict(x))


def test_recurrent_block_matches_the_interface_equations() -> None:
    """A 2-block recurrent SNN (direct input, T=12) against an independent numpy loop of the recurrent-layer
    interface: a[t] = W x[t] + b + W_rec s[t−1] (s[−1] = 0), u, v, s, reset as in :class:`LIF`; the membrane
    readout v_o[T] = Σ_t (1−dv)^{T−t} (W_h s[t] + b_h). Float64 both sides; spikes are exact comparisons, the
    logits agree to 1e-10 (a few hundred float64 adds)."""
    lif = LIF(du=0.7, dv=0.3, threshold=0.5, reset="subtract")
    spec = build_spec(
        "snn",
        (4,),
        3,
        width=6,
        depth=2,
        temporal=TemporalSpec(time_steps=12, encoding="direct"),
        lif=lif,
        recurrent=True,
    )
    p = {k: v.astype(np.float64) * 2 for k, v in init_params(spec, 5).items()}  # × 2: plenty of spikes
    x = np.random.default_rng(0).standard_normal((3, 4))
    got = run(spec, torch.tensor(x), {k: torch.tensor(v) for k, v in p.items()}).numpy()

    h_in, spikes = x, []
    for i in range(2):
        w, b, r = p[f"blocks.{i}.weight"], p[f"blocks.{i}.bias"], p[f"blocks.{i}.rec_weight"]
        u, v, s = np.zeros((3, 6)), np.zeros((3, 6)), np.zeros((3, 6))
        out = []
        for t in range(12):
            xt = h_in if i == 0 else h_in[t]
            a = xt @ w.T + b + s @ r.T
            u = (1 - lif.du) * u + a
            v = (1 - lif.dv) * v + u
            s = (v > lif.threshold).astype(float)
            v = v - lif.threshold * s
            out.append(s)
        h_in = out
        spikes.append(np.stack(out))
    want = sum((1 - lif.dv) ** (11 - t) * (spikes[1][t] @ p["head.weight"].T + p["head.bias"]) for t in range(12))
    assert 0.1 < spikes[0].mean() < 0.9 and 0.1 < spikes[1].mean() < 0.9  # the recurrence is exercised
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
