"""Lava backend, recurrent LIF blocks (issue 15): the one-step recurrent synapses (SPRecDense) against the host's
edgesp.snn and Lava's own Dense/LIF, on-chip learning of W and W_rec against the numpy reference (fixed_pt
byte for byte) and the torch sp-online trainer, and the fit check. Tiny networks, few Lava runs (~1 s each)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compilers import compile_model
from compilers.lava import rule
from compilers.lava.network_desc import load_netdesc
from compilers.lava.quant import lower
from edgesp.errors import TargetError
from edgesp.functional import init_params
from edgesp.manifest import Manifest
from edgesp.presets import build_spec
from edgesp.spec import LIF, Linear, ModelSpec, OptimizerSpec, RuleSpec, SignalSpec, TemporalSpec
from firmware_sim.lava.network import LavaSession, import_lava, prepare_inputs
from firmware_sim.lava.reference import ReferenceNet, encode
from targets import load_target
from tests.compilers.helpers import online_sgd_two_samples


def rec_spec(
    encoding: str = "direct", T: int = 6, depth: int = 2, lif: LIF | None = None, loss: str = "v9", lr: float = 0.05
) -> ModelSpec:
    """Tiny 12-10(-10)-3 SNN whose every block is recurrent (W_rec 10×10), hidden signal placement, learned W_S."""
    lif = lif or LIF(du=0.5, dv=0.2, threshold=0.4, recurrent=True)
    blocks = tuple((Linear(12 if i == 0 else 10, 10), lif) for i in range(depth))
    return ModelSpec(
        input_shape=(12,),
        num_classes=3,
        blocks=blocks,
        head=Linear(10, 3),
        signal=SignalSpec(kind="learned", placement="hidden", init_std=0.05),
        rule=RuleSpec(name="sp-voltage", loss=loss, temperature=0.5, optimizer=OptimizerSpec(name="sgd", lr=lr)),
        temporal=TemporalSpec(time_steps=T, encoding=encoding, seed=3),
        name="tiny-rec",
    )


def rec_params(spec: ModelSpec, gain: float = 2.5, rec_gain: float = 3.0) -> dict[str, np.ndarray]:
    """Fresh weights scaled up so the tiny network spikes and the recurrent current matters."""
    p = init_params(spec, 0)
    out = {}
    for k, v in p.items():
        if k.endswith("rec_weight"):
            out[k] = v * rec_gain
        elif k.startswith("blocks"):
            out[k] = v * gain
        else:
            out[k] = v
    return out


def test_float_recurrent_lava_matches_edgesp_snn_step_by_step():
    """Lava floating_pt (learning off) == edgesp.snn.block_step (torch float64, the spec's a[t] = W x + b +
    W_rec s[t−1]) on every stream — sample row and the C target rows (hidden placement: current z + W_rec s[t−1])
    — and the logits == edgesp.snn.run. Tolerance 1e-9 (float64 both sides, different summation order); spikes
    identical; the recurrent current must matter (a run with W_rec = 0 differs)."""
    from edgesp.functional import signal_forward
    from edgesp.snn import BlockState, block_step
    from edgesp.snn import run as snn_run

    spec = rec_spec(T=6)
    params = rec_params(spec)
    desc, _ = lower(spec, params, "floating_pt")
    assert [la.recurrent for la in desc.layers] == [True, True, False]
    tp = {k: torch.tensor(np.asarray(v, np.float64)) for k, v in params.items()}
    x = np.random.default_rng(0).standard_normal((2, 12))
    y = np.array([2, 0])
    T = spec.temporal.time_steps
    with LavaSession(desc, prepare_inputs(desc, x), y, np.zeros(2, bool), trace=2 * T) as sess:
        sess.run_all()
        traces = sess.traces()
        logits = sess.logits()
    np.testing.assert_allclose(logits, snn_run(spec, torch.tensor(x), tp).numpy(), atol=1e-9, rtol=0)
    no_rec = {k: (v * 0 if k.endswith("rec_weight") else v) for k, v in tp.items()}
    assert not np.allclose(logits, snn_run(spec, torch.tensor(x), no_rec).numpy(), atol=1e-3)
    z = torch.tensor(desc.table.astype(np.float64))  # float32 table, as the Lava run injects it
    np.testing.assert_allclose(
        z.numpy(), signal_forward(spec, torch.arange(3), {k: v.float() for k, v in tp.items()}), atol=1e-6
    )
    n_spikes = 0
    for n in range(2):
        h_state = [BlockState() for _ in spec.blocks]
        t_state = [BlockState() for _ in spec.blocks]
        for k in range(T):
            h, t = torch.tensor(x[n])[None], None
            for i in range(len(spec.blocks)):
                h, v_h, h_state[i] = block_step(spec, i, h, tp, h_state[i])
                t, v_t, t_state[i] = block_step(spec, i, t, tp, t_state[i], current=z if i == 0 else None)
                tv, ts = traces[i]
                np.testing.assert_allclose(tv[n * T + k], torch.cat([v_h, v_t]).numpy(), atol=1e-9, rtol=0)
                np.testing.assert_array_equal(ts[n * T + k], torch.cat([h, t]).numpy())
                n_spikes += int(h.sum() + t.sum())
    assert n_spikes > 50


def test_fixed_recurrent_block_matches_lavas_own_dense_cycle():
    """Our fixed_pt block (sample row, learning off) == Lava's own bit-accurate processes wired as a cycle:
    RingBuffer → Dense → LIF, and LIF.s_out → Dense(W_rec, rec_exp) → LIF.a_in (Lava's Dense buffers one step,
    which is what makes the cycle run and gives the spec's one-step recurrent delay). Spikes and voltages equal."""
    lv = import_lava()  # first: it imports Lava's runtime past its set_start_method call (firmware_sim.lava.network)
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF as LavaLIF
    from lava.proc.monitor.process import Monitor

    lif = LIF(du=0.3, dv=0.15, threshold=0.5, recurrent=True)
    spec = rec_spec(encoding="rate", T=24, depth=1, lif=lif)
    params = rec_params(spec, gain=3.0, rec_gain=4.0)
    params["blocks.0.bias"][:] = 0.0  # Lava's Dense has no bias synapse
    desc, q = lower(spec, params, "fixed_pt")
    la = desc.layers[0]
    assert "layer0.rec_weight" in q["tensors"] and la.rec_weight.dtype == np.int32 and np.all(la.rec_weight % 2 == 0)
    x = np.random.default_rng(2).uniform(size=(1, 12))
    T = spec.temporal.time_steps
    with LavaSession(desc, prepare_inputs(desc, x), np.array([1]), np.zeros(1, bool), trace=T) as sess:
        sess.run_all()
        ours_v, ours_s = sess.traces()[0]
    x_int = prepare_inputs(desc, x)[0, :, 0][None]
    spikes = np.stack([encode(x_int, "rate", desc.encoding_seed, 0, k, True)[0] for k in range(T)], axis=1)
    spikes = spikes >> rule.INPUT_FRAC
    src = RingBuffer(data=spikes.astype(np.int32))
    dense = Dense(weights=la.weight.astype(np.int32), weight_exp=la.weight_exp, num_message_bits=0)
    rec = Dense(weights=la.rec_weight.astype(np.int32), weight_exp=la.rec_exp, num_message_bits=0)
    neuron = LavaLIF(shape=(la.n_out,), du=la.du_int, dv=la.dv_int, vth=la.vth_int, bias_mant=0)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(neuron.a_in)
    neuron.s_out.connect(rec.s_in)
    rec.a_out.connect(neuron.a_in)
    mon_v, mon_s = Monitor(), Monitor()
    mon_v.probe(neuron.v, T + 1)
    mon_s.probe(neuron.s_out, T + 1)
    try:
        src.run(condition=lv["RunSteps"](num_steps=T + 1), run_cfg=lv["Loihi2SimCfg"](select_tag="fixed_pt"))
        lava_v = np.asarray(mon_v.get_data()[neuron.name]["v"])[1:]
        lava_s = np.asarray(mon_s.get_data()[neuron.name]["s_out"])[1:]
    finally:
        src.stop()
    np.testing.assert_array_equal(ours_s[:, 0], lava_s)
    np.testing.assert_array_equal(np.where(ours_s[:, 0] > 0, 0, ours_v[:, 0]), lava_v)  # Lava records post-reset v
    assert lava_s.sum() > 10 and np.abs(lava_v).max() > 1000
    # the recurrent synapses carried current: without them the same input gives other spikes
    ref = ReferenceNet(desc)
    ref.d.layers[0].rec_weight[:] = 0
    ref.run(prepare_inputs(desc, x), np.array([1]), np.zeros(1, bool), record=True)
    assert np.any(np.stack([r[0]["s"][0] for r in ref.trace]) != lava_s)


@pytest.mark.parametrize("precision,loss", [("floating_pt", "v9"), ("fixed_pt", "v9"), ("fixed_pt", "l2")])
def test_recurrent_learning_in_lava_matches_numpy_reference(precision, loss):
    """One Lava run streams [A (rule off), B (on), C (on), A (off)], T = 6 steps each, through a 2-block recurrent
    network: every step's voltages and spikes, the final W, b, W_rec of both blocks and the logits equal the numpy
    reference (fixed_pt: byte for byte, incl. the seeded stochastic rounding of both synapse groups; floating_pt:
    1e-9, float64 both sides, only the summation order differs). W_rec moved, and the two presentations of A
    give different logits (the weights changed during the run)."""
    spec = rec_spec(encoding="direct" if precision == "floating_pt" else "rate", T=6, loss=loss)
    desc, _ = lower(spec, rec_params(spec), precision)
    rng = np.random.default_rng(1)
    xa, xb, xc = rng.standard_normal((3, 12)) + 0.5
    x = np.stack([xa, xb, xc, xa])
    y = np.array([0, 1, 2, 0])
    learn = np.array([False, True, True, False])
    inputs = prepare_inputs(desc, x)
    steps = len(y) * spec.temporal.time_steps
    with LavaSession(desc, inputs, y, learn, seed=7, trace=steps) as sess:
        sess.run_all()
        weights, rec, logits, traces = sess.weights(), sess.rec_weights(), sess.logits(), sess.traces()
    ref = ReferenceNet(desc, seed=7)
    ref_logits = ref.run(inputs, y, learn, record=True)
    assert sorted(rec) == [0, 1]
    for i, ((w, b), la, la0) in enumerate(zip(weights, ref.d.layers, desc.layers, strict=True)):
        got, want = [w, b], [la.weight, la.bias]
        if i in rec:
            got.append(rec[i])
            want.append(la.rec_weight)
            assert np.any(rec[i] != la0.rec_weight)
            ref_v = np.stack([r[i]["v"] for r in ref.trace])
            ref_s = np.stack([r[i]["s"] for r in ref.trace])
            if precision == "fixed_pt":
                np.testing.assert_array_equal(traces[i][0], ref_v)
            else:
                np.testing.assert_allclose(traces[i][0], ref_v, atol=1e-9, rtol=0)
            np.testing.assert_array_equal(traces[i][1], ref_s)
            assert ref_s.sum() > 20
        for g, r in zip(got, want, strict=True):
            if precision == "fixed_pt":  # Var.get() returns floats: exact integers, then byte for byte as int64
                g_int = np.asarray(g).astype(np.int64)
                assert np.array_equal(g_int, g) and g_int.tobytes() == np.asarray(r, np.int64).tobytes()
            else:
                np.testing.assert_allclose(g, r, atol=1e-9, rtol=0)
        assert np.any(w != la0.weight)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-9, rtol=0)
    assert not np.allclose(logits[0], logits[3])


def test_recurrent_float_rule_matches_edgesp_sp_online_trainer():
    """The on-chip rule in floating_pt (numpy reference, equal to Lava's floating_pt above) == edgesp's torch
    sp-online trainer (batch 1, an update every step, SGD without momentum, loss v1, hidden placement): after
    two samples W_0, W_1, both W_rec and W_S agree to float32 precision (1e-5 of the largest change) — i.e.
    ΔW_rec = −lr Σ_r δ[r][t]ᵀ s[r][t−1] is autograd's gradient with the previous state detached."""
    spec = rec_spec(T=5)
    params = rec_params(spec)
    ref, got = online_sgd_two_samples(spec, params)
    for i in range(2):
        for name, mine in (("weight", ref.d.layers[i].weight), ("rec_weight", ref.d.layers[i].rec_weight)):
            key = f"blocks.{i}.{name}"
            moved = np.abs(got[key] - params[key]).max()
            assert moved > 1e-3, key
            np.testing.assert_allclose(got[key], mine, atol=1e-5 * moved)
    moved = np.abs(got["signal.weight"] - params["signal.weight"]).max()
    np.testing.assert_allclose(got["signal.weight"], ref.d.signal_weight, atol=1e-5 * moved)


# --------------------------------------------------------------------------- compiler
def test_compile_recurrent_counts_rec_synapses_and_round_trips(tmp_path):
    """A recurrent build: W_rec in network.npz (fixed_pt: int32 even mantissas, own exponent, in the quantisation
    report), the planned synapses include the H×H recurrent ones, the manifest places W_rec in the recurrent
    synapse group (process rec0), and load_netdesc reads it back unchanged."""
    spec = build_spec(
        "snn",
        (64,),
        10,
        width=32,
        depth=1,
        recurrent=True,
        rule=RuleSpec(name="sp-voltage"),
        temporal=TemporalSpec(time_steps=5),
    )
    params = init_params(spec, 0)
    m = compile_model(spec, params, load_target("loihi2"), tmp_path, 1)
    disk = json.loads((tmp_path / "manifest.json").read_text())
    assert disk["planned_memory"]["details"]["synapse_bytes"] == (64 + 1 + 32) * 32 + (32 + 1) * 10
    assert disk["backend"]["core_map"][0]["recurrent"] is True
    entry = {p["name"]: p for p in disk["parameters"]}["blocks.0.rec_weight"]
    assert entry["update_output"] == "rec0.weights" and entry["shape"] == [32, 32]
    assert m.backend["parameter_placement"]["blocks.0.rec_weight"]["on_chip"]
    q = disk["backend"]["quantisation"]["tensors"]["layer0.rec_weight"]
    assert 0 < q["rel_rms"] < 0.05
    desc = load_netdesc(tmp_path, Manifest.read(tmp_path))
    la = desc.layers[0]
    assert la.recurrent and la.rec_weight.dtype == np.int32 and np.all(la.rec_weight % 2 == 0)
    np.testing.assert_allclose(
        la.rec_weight * 2.0 ** (la.rec_exp - rule.SIGMA),
        params["blocks.0.rec_weight"],
        atol=2.0 ** (la.rec_exp - rule.SIGMA),
    )
    assert "W_rec" in json.loads((tmp_path / "learning.json").read_text())["recurrent"]


def test_fit_check_refuses_recurrent_fan_in_beyond_loihi2(tmp_path):
    """400 recurrent neurons × 11 streams (sample + 10 class targets) need 64 + 11·400 = 4,464 input axons per
    core > Loihi 2's fan-in 4,096, while the same model without recurrence fits: one line naming both parts."""
    kw = dict(width=400, depth=1, rule=RuleSpec(name="sp-voltage"), temporal=TemporalSpec(time_steps=5))
    plain = build_spec("snn", (64,), 10, **kw)
    compile_model(plain, init_params(plain, 0), load_target("loihi2"), tmp_path / "plain", 1)
    spec = build_spec("snn", (64,), 10, recurrent=True, **kw)
    with pytest.raises(TargetError) as e:
        compile_model(spec, init_params(spec, 0), load_target("loihi2"), tmp_path / "rec", 1)
    msg = str(e.value)
    assert "\n" not in msg and "4464 input axons" in msg and "11×400 recurrent" in msg and "fan-in 4096" in msg
    assert not (tmp_path / "rec" / "manifest.json").exists()
