"""Lava backend: parity of the process network with independent references, on-chip learning, fit check,
runtime hygiene. Each Lava run costs ~1-3 s (worker start-up), so the networks are tiny and runs few."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from compilers import compile_model
from compilers.lava import rule
from compilers.lava.quant import lower
from edgesp.errors import CompileError, RuntimeMissingError, TargetError
from edgesp.functional import init_params
from edgesp.presets import build_spec
from edgesp.spec import LIF, Linear, ModelSpec, OptimizerSpec, RuleSpec, SignalSpec, TemporalSpec
from edgesp.spiking import LIFState, lif_step
from firmware_sim.lava.network import LavaSession, import_lava, prepare_inputs
from firmware_sim.lava.reference import ReferenceNet, encode
from targets import load_target
from tests.compilers.helpers import online_sgd_two_samples


def lava_children() -> list[int]:
    """Child processes of this test process, except multiprocessing's resource tracker (a per-interpreter
    helper that lives until the interpreter exits; it is not a Lava worker)."""
    me = os.getpid()
    pids: list[int] = []
    for task in os.listdir(f"/proc/{me}/task"):
        with open(f"/proc/{me}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    out = []
    for p in set(pids):
        try:
            with open(f"/proc/{p}/cmdline") as f:
                if "resource_tracker" in f.read():
                    continue
        except OSError:
            continue
        out.append(p)
    return out


def small_spec(
    encoding: str = "direct",
    loss: str = "v9",
    T: int = 4,
    lif: LIF | None = None,
    depth: int = 2,
    readout: str = "membrane",
    placement: str = "hidden",
    signal_kind: str = "learned",
) -> ModelSpec:
    """Tiny 12-10(-10)-3 SNN. placement 'hidden' (default: z (3, 10) is block 0's target current) or
    'input' (the legacy layout: z (3, 12) is the target stream's input, init N(0, 1) as legacy checkpoints)."""
    lif = lif or LIF(du=0.5, dv=0.2, threshold=0.4)
    blocks = tuple((Linear(12 if i == 0 else 10, 10), lif) for i in range(depth))
    signal = SignalSpec(kind=signal_kind, placement=placement, init_std=0.05 if placement == "hidden" else 1.0)
    return ModelSpec(
        input_shape=(12,),
        num_classes=3,
        blocks=blocks,
        head=Linear(10, 3),
        signal=signal,
        rule=RuleSpec(name="sp-voltage", loss=loss, temperature=0.5),
        temporal=TemporalSpec(time_steps=T, encoding=encoding, seed=3, readout=readout),
        name="tiny",
    )


def boosted_params(spec: ModelSpec, gain: float = 2.5) -> dict[str, np.ndarray]:
    """Fresh weights scaled up so the tiny network spikes."""
    p = init_params(spec, 0)
    return {k: (v * gain if k.startswith("blocks") else v) for k, v in p.items()}


@pytest.mark.parametrize(
    "readout,placement", [("membrane", "hidden"), ("spike_count", "hidden"), ("membrane", "input")]
)
def test_float_lava_voltages_and_spikes_match_edgesp_lif_step(readout, placement):
    """Lava floating_pt == edgesp.spiking.lif_step (torch, float64) on every stream, learning off, and the
    readout logits == edgesp.snn.run. Tolerance 1e-9 (float64 both sides, different summation order);
    spikes identical. Hidden placement: block 0's target rows get a = z = edgesp.functional.signal_forward
    (one row per class) as current every step; input placement: z is the target rows' input through W_0."""
    from edgesp.functional import signal_forward
    from edgesp.snn import run as snn_run

    spec = small_spec(T=5, readout=readout, placement=placement)
    params = boosted_params(spec)
    desc, _ = lower(spec, params, "floating_pt")
    tp = {k: torch.tensor(np.asarray(v, np.float64)) for k, v in params.items()}
    z = signal_forward(spec, torch.arange(3), {k: v.float() for k, v in tp.items()}).numpy()
    assert desc.table.shape == ((3, 10) if placement == "hidden" else (3, 12))
    np.testing.assert_allclose(desc.table, z, atol=1e-6)  # float32 table
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 12))
    y = np.array([2, 0])
    T = spec.temporal.time_steps
    with LavaSession(desc, prepare_inputs(desc, x), y, np.zeros(2, bool), trace=2 * T) as sess:
        sess.run_all()
        traces = sess.traces()
        logits = sess.logits()
    ref_logits = snn_run(spec, torch.tensor(x), tp).numpy()
    np.testing.assert_allclose(logits, ref_logits, atol=1e-9, rtol=0)
    table = torch.tensor(desc.table.astype(np.float64))
    hidden = placement == "hidden"
    n_spikes = 0
    for n in range(2):
        sample = torch.tensor(x[n])[None]
        rows = sample if hidden else torch.cat([sample, table], 0)  # + one target row per class at the input
        states = [LIFState.zeros((4, 10)) for _ in spec.blocks]
        for k in range(T):
            s = rows
            for i, block in enumerate(spec.blocks):
                a = s @ tp[f"blocks.{i}.weight"].T + tp[f"blocks.{i}.bias"]
                if i == 0 and hidden:
                    a = torch.cat([a, table], 0)  # block 0's target rows: the signal as current
                s, v, states[i] = lif_step(block[1], a, states[i])
                tv, ts = traces[i]
                np.testing.assert_allclose(tv[n * T + k], v.numpy(), atol=1e-9, rtol=0)
                np.testing.assert_array_equal(ts[n * T + k], s.numpy())
                n_spikes += int(s.sum())
    assert n_spikes > 10  # the comparison exercised spiking and reset


def test_fixed_lif_matches_lavas_bit_accurate_lif():
    """Our fixed_pt SPLIF (row 0) == lava.proc.lif LIF with Lava's bit-accurate fixed_pt models
    (PyDenseModelBitAcc + PyLifModelBitAcc), same integer weights, exponent, decays, threshold, spikes in."""
    lv = import_lava()  # first: it imports Lava's runtime past its set_start_method call (firmware_sim.lava.network)
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF as LavaLIF
    from lava.proc.monitor.process import Monitor

    spec = small_spec(encoding="rate", T=24, lif=LIF(du=0.3, dv=0.15, threshold=0.5), depth=1)
    params = boosted_params(spec, gain=3.0)
    params["blocks.0.bias"][:] = 0.0  # Lava's Dense has no bias synapse
    desc, _ = lower(spec, params, "fixed_pt")
    la = desc.layers[0]
    x = np.random.default_rng(2).uniform(size=(1, 12))
    T = spec.temporal.time_steps
    with LavaSession(desc, prepare_inputs(desc, x), np.array([1]), np.zeros(1, bool), trace=T) as sess:
        sess.run_all()
        ours_v, ours_s = sess.traces()[0]
    # the same input spikes, from the same seeded encoder, for Lava's own processes (fixed_pt payload of a
    # spike is 2^INPUT_FRAC with the layer's input shift INPUT_FRAC, i.e. exactly a binary spike)
    x_int = prepare_inputs(desc, x)[0, :, 0][None]
    spikes = np.stack([encode(x_int, "rate", desc.encoding_seed, 0, k, True)[0] for k in range(T)], axis=1)
    spikes = spikes >> rule.INPUT_FRAC
    assert set(np.unique(spikes)) == {0, 1}
    src = RingBuffer(data=spikes.astype(np.int32))
    dense = Dense(weights=la.weight.astype(np.int32), weight_exp=la.weight_exp, num_message_bits=0)
    lif = LavaLIF(shape=(la.n_out,), du=la.du_int, dv=la.dv_int, vth=la.vth_int, bias_mant=0)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    mon_v, mon_s = Monitor(), Monitor()
    mon_v.probe(lif.v, T + 1)
    mon_s.probe(lif.s_out, T + 1)
    try:
        src.run(condition=lv["RunSteps"](num_steps=T + 1), run_cfg=lv["Loihi2SimCfg"](select_tag="fixed_pt"))
        lava_v = np.asarray(mon_v.get_data()[lif.name]["v"])[1:]
        lava_s = np.asarray(mon_s.get_data()[lif.name]["s_out"])[1:]
    finally:
        src.stop()
    post_reset = np.where(ours_s[:, 0] > 0, 0, ours_v[:, 0])
    np.testing.assert_array_equal(ours_s[:, 0], lava_s)
    np.testing.assert_array_equal(post_reset, lava_v)
    assert lava_s.sum() > 5 and np.abs(lava_v).max() > 1000  # non-trivial integer dynamics


@pytest.mark.parametrize(
    "precision,placement,loss",
    [
        ("floating_pt", "hidden", "v9"),
        ("fixed_pt", "hidden", "v9"),
        ("fixed_pt", "hidden", "l2"),
        ("fixed_pt", "input", "v9"),
    ],
)
def test_learning_in_lava_matches_numpy_reference_and_changes_weights_mid_run(precision, placement, loss):
    """One Lava run streams [A (rule off), B (on), C (on), A (off)]: the final weights equal the numpy reference
    of the same rule (float: 1e-9, float64 both; fixed: bit-exact incl. the seeded stochastic rounding), and
    the two presentations of A give different logits, so the weights changed during the run. Hidden placement
    with a learned signal: W_S, b_S and the injected table equal the reference too (fixed_pt: the re-quantised
    table bit-exact) and moved; input placement (legacy): the table stays fixed."""
    spec = small_spec(encoding="direct" if precision == "floating_pt" else "rate", T=4, placement=placement, loss=loss)
    spec = spec.replace_rule(optimizer=OptimizerSpec(name="sgd", lr=0.05))
    desc, _ = lower(spec, boosted_params(spec), precision)
    assert desc.signal_learn == (placement == "hidden")
    rng = np.random.default_rng(1)
    xa, xb, xc = rng.standard_normal((3, 12)) + 0.5
    x = np.stack([xa, xb, xc, xa])
    y = np.array([0, 1, 2, 0])
    learn = np.array([False, True, True, False])
    inputs = prepare_inputs(desc, x)
    with LavaSession(desc, inputs, y, learn, seed=7) as sess:
        sess.run_all()
        weights = sess.weights()
        logits = sess.logits()
        signal = sess.signal()
    ref = ReferenceNet(desc, seed=7)
    ref_logits = ref.run(inputs, y, learn)
    for (w, b), la, la0 in zip(weights, ref.d.layers, desc.layers, strict=True):
        if precision == "floating_pt":
            np.testing.assert_allclose(w, la.weight, atol=1e-9, rtol=0)
            np.testing.assert_allclose(b, la.bias, atol=1e-9, rtol=0)
        else:
            np.testing.assert_array_equal(w, la.weight)
            np.testing.assert_array_equal(b, la.bias)
        assert np.any(w != la0.weight)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-9, rtol=0)
    assert not np.allclose(logits[0], logits[3])
    if desc.signal_learn:
        if precision == "fixed_pt":
            np.testing.assert_array_equal(signal["table"], ref.d.table)
        else:
            np.testing.assert_allclose(signal["table"], ref.d.table, atol=1e-12, rtol=0)
        np.testing.assert_allclose(signal["signal_weight"], ref.d.signal_weight, atol=1e-12, rtol=0)
        np.testing.assert_allclose(signal["signal_bias"], ref.d.signal_bias, atol=1e-12, rtol=0)
        assert np.any(signal["table"] != desc.table) and np.any(signal["signal_weight"] != desc.signal_weight)
    else:
        np.testing.assert_array_equal(signal["table"], desc.table)


def test_third_factor_is_the_gradient_of_the_sp_voltage_loss():
    """rule.hidden_delta / head_delta == torch autograd of edgesp.losses.sp_loss (v1 with one target row per
    class, l2) and of the head's cross-entropy, w.r.t. the membrane potentials."""
    from edgesp.losses import sp_loss

    rng = np.random.default_rng(0)
    v = rng.standard_normal((4, 7))  # sample row + 3 class target rows
    y, tau = 2, 0.5
    vt = torch.tensor(v, requires_grad=True)
    classes = torch.arange(3)
    sp_loss("v1", vt[:1], vt[1:], torch.tensor([y]), torch.tensor([y]), classes, temperature=tau).backward()
    np.testing.assert_allclose(rule.hidden_delta(v, y, "v1", tau), vt.grad.numpy(), atol=1e-12)
    vt = torch.tensor(v[:2], requires_grad=True)
    sp_loss("l2", vt[:1], vt[1:], torch.tensor([0]), torch.tensor([y]), torch.tensor([y])).backward()
    np.testing.assert_allclose(rule.hidden_delta(v[:2], y, "l2", tau), vt.grad.numpy(), atol=1e-12)
    z = torch.tensor(v[0, :3], requires_grad=True)
    torch.nn.functional.cross_entropy(z[None], torch.tensor([1])).backward()
    np.testing.assert_allclose(rule.head_delta(v[0, :3], 1), z.grad.numpy(), atol=1e-12)


def test_stochastic_rounding_is_unbiased_and_integer():
    gen = np.random.default_rng(0)
    x = np.full(20000, 5, np.int64)  # 5 / 8 = 0.625
    q = rule.sround_shift(x, 3, gen)
    assert set(np.unique(q)) <= {0, 1}
    assert abs(q.mean() - 0.625) < 0.02


# --------------------------------------------------------------------------- compiler
def test_compile_writes_manifest_npz_and_reports_quantisation(tmp_path):
    spec = build_spec(
        "snn",
        (64,),
        10,
        width=32,
        depth=2,
        rule=RuleSpec(name="sp-voltage"),
        temporal=TemporalSpec(time_steps=5, encoding="rate"),
    )
    params = init_params(spec, 0)
    m = compile_model(spec, params, load_target("loihi2"), tmp_path, 16)
    disk = json.loads((tmp_path / "manifest.json").read_text())
    assert disk["runtime"] == "lava" and disk["target"] == "loihi2"
    assert set(disk["artifacts"]) == {"inference", "update"}
    assert sorted(p["name"] for p in disk["parameters"]) == sorted(spec.param_shapes())
    assert disk["backend"]["cores_used"] == m.backend["cores_used"] == 3
    assert set(disk["hashes"]) == {"network.npz", "learning.json"}  # Lava builds are verified too
    with np.load(tmp_path / disk["artifacts"]["inference"], allow_pickle=False) as z:
        w0 = z["layer0.weight"]
        assert w0.dtype == np.int32 and w0.min() >= rule.W_MIN and w0.max() <= rule.W_MAX and np.all(w0 % 2 == 0)
    q = disk["backend"]["quantisation"]
    assert 0 < q["weight_rel_rms_max"] < 0.05  # 8-bit mantissa + per-layer exponent
    assert q["tensors"]["layer0.dv"]["quantised"] == pytest.approx(0.2, abs=1 / 4096)
    assert disk["planned_memory"]["details"]["synapse_bytes"] == (64 + 1) * 32 + (32 + 1) * 32 + (32 + 1) * 10
    m2 = compile_model(spec, params, load_target("lava-cpu"), tmp_path / "f", 16)
    assert m2.backend["quantisation"] is None and m2.backend["cores_used"] == 3
    assert m.backend["rule_note"] is None  # sp-voltage is what the chip runs


@pytest.mark.parametrize(
    "name,params,says",
    [
        ("eprop", {}, "eprop"),
        ("bptt", {}, "bptt"),
        ("sp-online", {"trace": "filter"}, "trace=filter"),
        ("sp-online", {"v_floor": -1.0, "head_steps": "last"}, "head_steps=last"),
        ("sp-online", {"loss_every": 5}, "loss_every=5"),  # the chip forms its SP loss at every step
    ],
)
def test_a_rule_the_chip_does_not_run_is_noted_in_the_manifest(name, params, says, tmp_path):
    """Lava learns with per-step SP on chip whatever rule trained the weights: a spec naming another rule, or host
    settings such as eligibility traces, compiles with a note in the manifest (and on the CLI) instead of silently."""
    spec = build_spec(
        "snn",
        (16,),
        4,
        width=8,
        depth=1,
        rule=RuleSpec(name=name, params=params),
        temporal=TemporalSpec(time_steps=3, encoding="rate"),
    )
    m = compile_model(spec, init_params(spec, 0), load_target("lava-cpu"), tmp_path, 1)
    note = json.loads((tmp_path / "manifest.json").read_text())["backend"]["rule_note"]
    assert note == m.backend["rule_note"] and says in note and "per-step SP" in note


def test_fit_check_refuses_a_model_too_large_for_loihi2(tmp_path):
    spec = build_spec(
        "snn", (64,), 10, width=2048, depth=2, rule=RuleSpec(name="sp-voltage"), temporal=TemporalSpec(time_steps=5)
    )
    with pytest.raises(TargetError) as e:
        compile_model(spec, init_params(spec, 0), load_target("loihi2"), tmp_path, 1)
    msg = str(e.value)
    assert "\n" not in msg and "2048" in msg and "fan-in 4096" in msg
    # too many cores: a user target with 4 cores of 64 neurons
    small = tmp_path / "tiny.toml"
    small.write_text(
        'name = "tiny"\nruntime = "lava"\nprecision = "fixed_pt"\n[neuromorphic]\ncores = 4\n'
        "neurons_per_core = 704\nsynapses_per_core = 100000\nfan_in = 4096\nfan_out = 4096\n"
    )
    spec = build_spec(
        "snn", (64,), 10, width=128, depth=2, rule=RuleSpec(name="sp-voltage"), temporal=TemporalSpec(time_steps=5)
    )
    with pytest.raises(TargetError, match=r"needs 5 cores but tiny has 4"):
        compile_model(spec, init_params(spec, 0), load_target(str(small)), tmp_path / "b", 1)
    assert not (tmp_path / "manifest.json").exists()


def test_non_spiking_model_is_refused(tmp_path):
    spec = build_spec("mlp", (64,), 10, width=16, depth=1)
    with pytest.raises(CompileError, match="not spiking"):
        compile_model(spec, init_params(spec, 0), load_target("lava-cpu"), tmp_path, 1)


# --------------------------------------------------------------------------- runtime hygiene
def test_runtime_is_stopped_on_worker_error_and_on_interrupt(monkeypatch):
    spec = small_spec(T=3, depth=1)
    desc, _ = lower(spec, init_params(spec, 0), "floating_pt")
    x = prepare_inputs(desc, np.zeros((4, 12)))
    before = lava_children()
    with LavaSession(desc, x, np.zeros(4, int), np.ones(4, bool)) as sess:

        def interrupt(_s):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            sess.run_all(3, interrupt)
    assert lava_children() == before

    from firmware_sim.lava import processes

    def boom(self):
        raise ValueError("boom")

    monkeypatch.setattr(processes._SourceModel, "_payload", boom)  # workers are forked: they see the patch
    with pytest.raises(CompileError, match="source failed at time step 1"):
        with LavaSession(desc, x, np.zeros(4, int), np.ones(4, bool)) as sess:
            sess.run_all()
    assert lava_children() == before


def test_missing_lava_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lava.magma.core.run_configs", None)
    with pytest.raises(RuntimeMissingError, match="lava-nc cannot be imported"):
        import_lava()


# --------------------------------------------------------------------------- hidden signal placement
def test_hidden_placement_injection_matches_reference_and_lavas_lif_bias():
    """Hidden placement, fixed_pt: block 0's target rows receive the (C, H_0) table as current every step. Their
    integer voltages and spikes == the numpy reference, and == Lava's own bit-accurate LIF (PyLifModelBitAcc)
    whose per-compartment bias is the table (bias_mant = z_int, bias_exp = 6): with du = 1 the current of a step
    is exactly a compartment bias, i.e. on Loihi the target needs no synapses. The table itself is
    signal_forward quantised to SIGMA fractional bits."""
    lv = import_lava()  # first: it imports Lava's runtime past its set_start_method call (firmware_sim.lava.network)
    from lava.proc.lif.process import LIF as LavaLIF
    from lava.proc.monitor.process import Monitor

    from edgesp.functional import signal_forward

    spec = small_spec(T=12, lif=LIF(du=1.0, dv=0.15, threshold=0.5), depth=1)
    params = boosted_params(spec)
    desc, q = lower(spec, params, "fixed_pt")
    z = signal_forward(spec, torch.arange(3), {k: torch.tensor(v) for k, v in params.items()}).double().numpy()
    assert desc.table.shape == (3, 10) and q["tensors"]["signal.table"]["frac_bits"] == rule.SIGMA
    np.testing.assert_array_equal(desc.table, np.rint(z * 2**rule.SIGMA))
    la = desc.layers[0]
    T = spec.temporal.time_steps
    x = np.random.default_rng(4).standard_normal((1, 12))
    inputs = prepare_inputs(desc, x)
    with LavaSession(desc, inputs, np.array([1]), np.zeros(1, bool), trace=T) as sess:
        sess.run_all()
        ours_v, ours_s = sess.traces()[0]  # (T, 1 + 3, 10)
    ref = ReferenceNet(desc)
    ref.run(inputs, np.array([1]), np.zeros(1, bool), record=True)
    np.testing.assert_array_equal(ours_v, np.stack([r[0]["v"] for r in ref.trace]))
    np.testing.assert_array_equal(ours_s, np.stack([r[0]["s"] for r in ref.trace]))
    assert la.du_int == 4095 and la.lif_bias_int == 0
    lif = LavaLIF(
        shape=(30,),
        du=la.du_int,
        dv=la.dv_int,
        vth=la.vth_int,
        bias_mant=desc.table.reshape(-1),
        bias_exp=rule.ACT_SHIFT,
    )
    mon_v, mon_s = Monitor(), Monitor()
    mon_v.probe(lif.v, T)
    mon_s.probe(lif.s_out, T)
    try:
        lif.run(condition=lv["RunSteps"](num_steps=T), run_cfg=lv["Loihi2SimCfg"](select_tag="fixed_pt"))
        lava_v = np.asarray(mon_v.get_data()[lif.name]["v"]).reshape(T, 3, 10)
        lava_s = np.asarray(mon_s.get_data()[lif.name]["s_out"]).reshape(T, 3, 10)
    finally:
        lif.stop()
    tgt_s = ours_s[:, 1:]
    np.testing.assert_array_equal(tgt_s, lava_s)
    np.testing.assert_array_equal(np.where(tgt_s > 0, 0, ours_v[:, 1:]), lava_v)  # Lava records post-reset v
    assert lava_s.sum() > 5 and np.abs(lava_v).max() > 1000


def test_signal_update_is_the_gradient_through_layernorm():
    """rule.signal_grad == torch autograd of edgesp.functional.signal_forward (relu and none), for
    dz = ∂L/∂z per class row; rule.signal_step with the v1 third factor of the target rows applies it."""
    from edgesp.functional import signal_forward

    rng = np.random.default_rng(0)
    dz = rng.standard_normal((3, 10))
    for act in ("relu", "none"):
        spec = small_spec()
        spec = ModelSpec.from_dict({**spec.to_dict(), "signal": {**spec.to_dict()["signal"], "activation": act}})
        params = init_params(spec, 1)
        ws, bs = params["signal.weight"].astype(np.float64), params["signal.bias"].astype(np.float64) + 0.01
        tw = torch.tensor(ws, dtype=torch.float32, requires_grad=True)  # signal_forward computes in float32
        tb = torch.tensor(bs, dtype=torch.float32, requires_grad=True)
        z = signal_forward(spec, torch.arange(3), {"signal.weight": tw, "signal.bias": tb})
        np.testing.assert_allclose(rule.signal_forward(ws, bs, act), z.detach().numpy(), atol=1e-5)
        z.backward(torch.tensor(dz, dtype=torch.float32))
        gw, gb = rule.signal_grad(ws, bs, dz, act)
        scale = np.abs(gw).max()
        np.testing.assert_allclose(gw, tw.grad.numpy(), atol=1e-5 * scale)
        np.testing.assert_allclose(gb, tb.grad.numpy(), atol=1e-5 * scale)
        ws2, bs2, table = rule.signal_step(ws.copy(), bs.copy(), dz, 0, "v1", act, 0.01, False)
        np.testing.assert_allclose(ws2, ws - 0.01 * gw, atol=1e-15)
        np.testing.assert_allclose(table, rule.signal_forward(ws2, bs2, act), atol=0)


def test_legacy_input_placement_checkpoint_compiles_and_one_line_error_for_sequences(tmp_path):
    """A spec written before placement existed loads as input placement: it compiles (the (C, D_in) table is the
    target input, fixed on the host, noted in the manifest); the hidden default puts a (C, H_0) table in and
    marks W_S as learned on the embedded CPU. An input-placement model whose input step has fewer features
    than classes is refused in one line naming the fix."""
    spec = build_spec(
        "snn",
        (64,),
        10,
        width=32,
        depth=2,
        rule=RuleSpec(name="sp-voltage"),
        temporal=TemporalSpec(time_steps=5, encoding="direct"),
    )
    d = spec.to_dict()
    d["signal"] = {"kind": "learned", "activation": "relu"}  # as written before placement existed
    legacy = ModelSpec.from_dict(d)
    assert legacy.signal.placement == "input"
    m = compile_model(legacy, init_params(legacy, 0), load_target("loihi2"), tmp_path / "legacy", 1)
    assert "input signal placement" in m.backend["notes"] and m.backend["network"]["placement"] == "input"
    where = m.backend["parameter_placement"]
    sig = [p for p in m.parameters if p.name.startswith("signal.")]
    assert [where[p.name]["learned"] for p in sig] == [False, False] and sig[0].shape == (64, 10)
    with np.load(tmp_path / "legacy" / "network.npz") as z:
        assert z["signal.table"].shape == (10, 64) and "signal.weight" not in z.files
    m = compile_model(spec, init_params(spec, 0), load_target("lava-cpu"), tmp_path / "hidden", 1)
    assert "hidden signal placement" in m.backend["notes"] and "embedded CPU" in m.backend["notes"]
    where = m.backend["parameter_placement"]
    sig = [p for p in m.parameters if p.name.startswith("signal.")]
    assert [(where[p.name]["learned"], where[p.name]["on_chip"], p.update_output) for p in sig] == [
        (True, False, "dense0.signal_weight"),
        (True, False, "dense0.signal_bias"),
    ]
    with np.load(tmp_path / "hidden" / "network.npz") as z:
        assert z["signal.table"].shape == (10, 32) and z["signal.weight"].shape == (32, 10)
    seq = build_spec(
        "snn",
        (1, 20),
        10,
        width=16,
        depth=1,
        rule=RuleSpec(name="sp-voltage"),
        signal=SignalSpec(placement="input", init_std=1.0),
        temporal=TemporalSpec(encoding="sequence"),
    )
    with pytest.raises(CompileError) as e:
        compile_model(seq, init_params(seq, 0), load_target("lava-cpu"), tmp_path / "seq", 1)
    assert "\n" not in str(e.value) and "--signal-placement hidden" in str(e.value)


def test_float_learning_matches_edgesp_sp_online_trainer():
    """The rule in floating_pt == edgesp's torch sp-online trainer (batch 1, update every step, SGD without
    momentum, loss v1, hidden placement with a learned signal): after two samples W_0, W_1 and W_S agree to
    float32 precision. The head is excluded: the on-chip readout integrates o ← (1−dv)o + W_t s_t + b_t with the
    weights of each step, the torch readout recomputes W e + β b with the current weights (equal only while the
    head does not learn)."""
    spec = small_spec()
    params = boosted_params(spec)
    ref, got = online_sgd_two_samples(spec, params)
    for i in range(2):
        moved = np.abs(got[f"blocks.{i}.weight"] - params[f"blocks.{i}.weight"]).max()
        np.testing.assert_allclose(got[f"blocks.{i}.weight"], ref.d.layers[i].weight, atol=1e-5 * moved)
        np.testing.assert_allclose(got[f"blocks.{i}.bias"], ref.d.layers[i].bias, atol=1e-5 * moved)
    moved = np.abs(got["signal.weight"] - params["signal.weight"]).max()
    assert moved > 0.1
    np.testing.assert_allclose(got["signal.weight"], ref.d.signal_weight, atol=1e-5 * moved)
    np.testing.assert_allclose(got["signal.bias"], ref.d.signal_bias, atol=1e-5 * moved)


def test_lava_builds_are_verified_before_use(tmp_path):
    """A Lava build carries the sha256 of network.npz and learning.json: a swapped same-shape network is refused
    with one line before any process starts (issue 12), and an old untyped manifest names the fix."""
    from edgesp.errors import CompileError
    from firmware_sim.lava_device import _load

    spec = build_spec(
        "snn", (64,), 10, width=16, depth=1, rule=RuleSpec(name="sp-voltage"), temporal=TemporalSpec(time_steps=3)
    )
    compile_model(spec, init_params(spec, 0), load_target("lava-cpu"), tmp_path / "a", 1)
    compile_model(spec, init_params(spec, 1), load_target("lava-cpu"), tmp_path / "b", 1)
    _load(tmp_path / "a")  # intact
    (tmp_path / "a" / "network.npz").write_bytes((tmp_path / "b" / "network.npz").read_bytes())
    with pytest.raises(CompileError, match="network.npz: corrupt or replaced") as e:
        _load(tmp_path / "a")
    assert "\n" not in str(e.value)
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    m.pop("format_version")
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CompileError, match="build format version None.*re-run 'edgesp compile'"):
        _load(tmp_path / "b")
