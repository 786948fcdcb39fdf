"""The lowered SP update step (numpy reference interpreter) against the torch reference trainer."""

import numpy as np
import pytest

from compilers import interp
from compilers.lower import class_preactivations, lower_inference, lower_update, target_stream
from edgesp.errors import CompileError
from edgesp.rules.sigprop import SigpropTrainer
from edgesp.spec import SignalSpec
from tests.compilers.helpers import make

CASES = [
    ("mlp", (64,), "v9", "adam"),
    ("mlp", (64,), "v1", "sgd"),
    ("mlp", (64,), "l2", "adam"),
    ("cnn1d", (1, 40), "v9", "sgd"),
    ("cnn2d", (1, 8, 8), "v9", "adam"),
    ("vgg8", (1, 8, 8), "v1", "sgd"),
]


@pytest.mark.parametrize("preset,shape,loss,opt", CASES)
def test_update_program_matches_torch_trainer(preset, shape, loss, opt, rng):
    # Tolerance: float32 with different summation orders; 5 steps of Adam at lr 1e-2 stay within 1e-5
    # absolute on weights of magnitude ~0.1-1 (measured max 1.3e-6).
    spec, params = make(preset, shape, loss, opt)
    prog = lower_update(spec, params, 16)
    trainer = SigpropTrainer(spec, params, 0)
    state = {s.value.name: s.init for s in prog.states}
    for _ in range(5):
        x = rng.standard_normal((16, *spec.input_shape)).astype(np.float32)
        y = rng.integers(0, 10, 16)
        out, new = interp.run(prog, {"x": x, "y": y.astype(np.int32), "lr": np.float32(1e-2)}, state)
        state.update(new)
        losses = trainer.train_step(x, y)
        for k, v in losses.items():
            assert float(out[k]) == pytest.approx(v, rel=1e-5, abs=1e-5)
    for k, v in trainer.params().items():
        np.testing.assert_allclose(state[k], v, atol=1e-5, err_msg=k)
    logits, _ = interp.run(lower_inference(spec, trainer.params(), 16), {"x": x}, trainer.params())
    np.testing.assert_allclose(logits["logits"], trainer.predict(x), atol=1e-5)


def test_adam_in_row_blocks_matches_torch_trainer(rng):
    """Parameters of ≥ ADAM_CHUNK_MIN elements run Adam's elementwise chain (and, at R > 4 gradient rows, ṽ's
    g²) a block of rows at a time, joined by one concat_rows of ADAM_CHUNKS blocks: same updates as torch
    (5 steps at batch 16, 1e-5 as for the small models above). The row-product path (R ≤ 4) with row blocks is
    checked on the BP step (test_bp_baseline.py). Not at batch 1 here: a few of its gradient entries cancel to
    ~1e-8, where Adam's m/(√v + ε) turns float32 rounding of g into several % of a step, with and without row
    blocks alike (measured 6e-4 absolute on 10 of 65,536 weights after 5 steps)."""
    from compilers.lower import ADAM_CHUNK_MIN, ADAM_CHUNKS

    batch = 16
    spec, params = make("mlp", (64,), "v9", "adam", width=256, depth=2)
    assert params["blocks.0.weight"].size >= ADAM_CHUNK_MIN
    prog = lower_update(spec, params, batch)
    joins = {prog.producer(prog.state_updates[n]) for n in ("blocks.1.weight", "opt.blocks.1.weight.v")}
    assert {(op.kind, len(op.inputs)) for op in joins} == {("concat_rows", ADAM_CHUNKS)}
    # blocks of about 1/16 of the largest parameter (65,536 elements): blocks.0 (16,384) in 4, the head not at all
    assert len(prog.producer(prog.state_updates["blocks.0.weight"]).inputs) == 4
    assert prog.producer(prog.state_updates["head.weight"]).kind == "sub"
    trainer = SigpropTrainer(spec, params, 0)
    state = {s.value.name: s.init for s in prog.states}
    for _ in range(5):
        x = rng.standard_normal((batch, 64)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        _, new = interp.run(prog, {"x": x, "y": y.astype(np.int32), "lr": np.float32(1e-2)}, state)
        state.update(new)
        trainer.train_step(x, y)
    for k, v in trainer.params().items():
        np.testing.assert_allclose(state[k], v, atol=1e-5, err_msg=k)
        assert np.abs(v - params[k]).max() > 1e-4


def test_unsupported_models_are_refused():
    spec, params = make(loss="v14")
    with pytest.raises(CompileError, match="v14"):
        lower_update(spec, params, 4)
    spec, params = make("snn", (64,))
    with pytest.raises(CompileError, match="Lava"):
        lower_update(spec, params, 4)


def test_batch_losses_are_refused_at_batch_one_and_v1_learns_there(rng):
    """v9 compares the samples of a batch: at batch 1 its loss is constant, so compiling it is refused;
    v1 (one target per class) gives the batch-1 step real gradients that match the torch trainer."""
    spec, params = make(loss="v9")
    with pytest.raises(CompileError, match="--loss v1"):
        lower_update(spec, params, 1)
    spec, params = make(loss="v1", opt="sgd")
    spec = _with_stream(spec, "exact")
    prog = lower_update(spec, params, 1)
    trainer = SigpropTrainer(spec, params, 0)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    y = np.array([3])
    _, new = interp.run(prog, {"x": x, "y": y.astype(np.int32), "lr": np.float32(1e-2)})
    trainer.train_step(x, y)
    for k, v in trainer.params().items():
        np.testing.assert_allclose(new[k], v, atol=1e-6, err_msg=k)
    assert np.abs(new["blocks.0.weight"] - params["blocks.0.weight"]).max() > 1e-5


def _with_stream(spec, mode):
    return spec.replace_rule(params={"target_stream": mode})


def _block_forward_rows(prog):
    """Rows multiplied by a block's weight in live forward GEMMs (x·Wᵀ, W possibly reshaped), summed."""

    def source(v):
        src = prog.producer(v)
        return source(src.inputs[0]) if src is not None and src.kind in ("transpose", "reshape") else v

    rows = 0
    for op in prog.live_ops():
        src = prog.producer(op.inputs[1]) if op.kind == "matmul" else None
        if src is not None and src.kind == "transpose" and source(src.inputs[0]).startswith("blocks."):
            rows += prog.shape(op.inputs[0])[0]
    return rows


@pytest.mark.parametrize(
    "placement,preset,shape",
    [("hidden", "mlp", (64,)), ("input", "mlp", (64,)), ("hidden", "cnn1d", (1, 40))],
)
def test_cached_target_stream_equals_the_exact_step_from_a_fresh_table(placement, preset, shape, rng):
    """Batch 1, loss v1: the cached step runs one target row through each block's GEMM (the exact step runs C)
    and reads the other classes' pre-activations from tcache.k, with the gradient still flowing through them.
    From a fresh table (its initial value) one step equals the exact step: every loss and every parameter
    (float32, different summation orders: 1e-5). The next step, with class 3's rows fresh and the others one
    update stale, differs from the exact step, and the table's row of that step's class becomes the exact
    pre-activation under the current weights."""
    spec, params = make(preset, shape, "v1", "sgd", signal=SignalSpec(placement=placement))
    assert target_stream(spec, 1) == "exact" and target_stream(_with_stream(spec, "cached"), 1) == "cached"
    cached, exact = (
        lower_update(_with_stream(spec, "cached"), params, 1),
        lower_update(_with_stream(spec, "exact"), params, 1),
    )
    tables = class_preactivations(spec, params)
    assert {s.value.name for s in cached.states} - {s.value.name for s in exact.states} == {
        f"tcache.{k}" for k in tables
    }
    assert sorted(tables) == list(range(2 if placement == "hidden" else 1, len(spec.blocks) + 1))
    # forward GEMMs: 1 sample + 1 target row per block, against 1 + C = 11 (block 0 at hidden placement: 1 row)
    n, n0 = len(spec.blocks), int(placement == "hidden")
    if preset == "mlp":
        assert (_block_forward_rows(cached), _block_forward_rows(exact)) == (n0 + 2 * (n - n0), n0 + 11 * (n - n0))
    else:  # im2col: rows × positions
        assert 0 < 3 * _block_forward_rows(cached) < _block_forward_rows(exact)
    x = rng.standard_normal((2, 1, *shape)).astype(np.float32)
    feeds = {"x": x[0], "y": np.array([3], np.int32), "lr": np.float32(1e-2)}
    out_c, new_c = interp.run(cached, feeds)
    out_e, new_e = interp.run(exact, feeds)
    assert out_c.keys() == out_e.keys()
    for k in out_c:
        assert float(out_c[k]) == pytest.approx(float(out_e[k]), rel=1e-5, abs=1e-6), k
    for name in params:
        np.testing.assert_allclose(new_c[name], new_e[name], atol=1e-5, err_msg=name)
    assert np.abs(new_e["signal.weight"] - params["signal.weight"]).max() > 1e-4
    others = [c for c in range(10) if c != 3]
    for k, table in tables.items():
        np.testing.assert_array_equal(new_c[f"tcache.{k}"][others], table[others])
        np.testing.assert_allclose(new_c[f"tcache.{k}"][3], table[3], atol=1e-6)
    # two steps at lr 1e-3 (classes 3, then 5) from each build's own state: in step 2 the rows of the other
    # classes are one update stale, so the cached update differs from the exact one, to first order in lr
    # (measured: 4 % relative at lr 1e-3, 32 % at 1e-2 for this width-32 net)
    small = np.float32(1e-3)
    _, new_c = interp.run(cached, {**feeds, "lr": small})
    _, new_e = interp.run(exact, {**feeds, "lr": small})
    feeds2 = {"x": x[1], "y": np.array([5], np.int32), "lr": small}
    _, new_c2 = interp.run(cached, feeds2, new_c)
    _, new_e2 = interp.run(exact, feeds2, new_e)
    last = f"blocks.{len(spec.blocks) - 1}.weight"
    du_c, du_e = new_c2[last] - new_c[last], new_e2[last] - new_e[last]
    assert 1e-4 < np.linalg.norm(du_c - du_e) / np.linalg.norm(du_e) < 0.1
    fresh = class_preactivations(spec, {n: new_c[n] for n in params})
    for k in tables:
        np.testing.assert_allclose(new_c2[f"tcache.{k}"][5], fresh[k][5], atol=1e-5)
        np.testing.assert_array_equal(new_c2[f"tcache.{k}"][3], new_c[f"tcache.{k}"][3])
    with pytest.raises(CompileError, match="batch-1 steps with loss v1"):
        lower_update(_with_stream(spec, "cached"), params, 4)
    with pytest.raises(CompileError, match="unknown"):
        lower_update(_with_stream(spec, "bogus"), params, 1)
