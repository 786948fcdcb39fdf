"""The contracts between the four parts: one runtime registry, the Backend and Device protocols, and the
import structure (no cycles; compilers never import the device side)."""

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest

from compilers import BACKENDS, Backend, compile_model
from firmware_sim import SIMULATORS, Device
from targets import RUNTIME_REGISTRY, RUNTIMES, builtin_targets

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edgesp", "compilers", "targets", "firmware_sim")


def test_one_registry_names_every_runtime_once():
    assert set(BACKENDS) == set(SIMULATORS) == set(RUNTIMES) == set(RUNTIME_REGISTRY)
    assert {t.runtime for t in builtin_targets().values()} <= set(RUNTIMES)
    for name, r in RUNTIME_REGISTRY.items():
        assert BACKENDS[name] == r.backend and r.backend.startswith("compilers.")
        assert SIMULATORS[name] == r.device and r.device.startswith("firmware_sim.")


@pytest.mark.parametrize("runtime", sorted(RUNTIMES))
def test_every_backend_module_has_the_backend_protocol(runtime):
    module = importlib.import_module(BACKENDS[runtime])
    assert isinstance(module, Backend)


@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_devices_have_the_device_protocol_and_write_state(runtime, tmp_path):
    from tests.compilers.helpers import make

    target = {"onnxruntime": "edge-cpu", "tflite": "edge-cpu-tflite"}[runtime]
    spec, params = make("mlp", (64,), "v9", "adam", lr=1e-3, width=8)
    from targets import load_target

    compile_model(spec, params, load_target(target), tmp_path, batch=4)
    module = importlib.import_module(SIMULATORS[runtime])
    assert callable(module.simulate) and callable(module.profile)
    dev = module.DEVICE(tmp_path)
    assert isinstance(dev, Device)
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    zero = {k: np.zeros_like(v) for k, v in params.items()}
    dev.load_parameters(zero)
    assert not np.abs(dev.predict(x)).any()  # written state is what inference reads
    dev.load_parameters(params)
    dev.step(x, np.arange(4))
    got = dev.parameters()
    assert set(got) == set(params) and any(np.abs(got[k] - params[k]).max() > 0 for k in params)
    with pytest.raises(Exception, match="not one of this build's"):
        dev.load_parameters({"head.weight": np.zeros((3, 3), np.float32)})


@pytest.mark.parametrize("target", ["lava-cpu", "loihi2"])
def test_lava_device_has_the_device_protocol_and_round_trips_state(target, tmp_path):
    """LavaDevice runs each call on the Lava runtime: a learning step changes the weights, parameters() gives them
    in spec units (fixed_pt dequantised) and load_parameters() writes them back (re-quantised)."""
    from edgesp.functional import init_params
    from edgesp.presets import build_spec
    from edgesp.spec import RuleSpec, TemporalSpec
    from firmware_sim.lava_device import LavaDevice
    from targets import load_target

    spec = build_spec(
        "snn", (64,), 10, width=16, depth=1, rule=RuleSpec(name="sp-voltage"), temporal=TemporalSpec(3, "direct")
    )
    params = init_params(spec, 0)
    compile_model(spec, params, load_target(target), tmp_path, batch=1)
    dev = LavaDevice(tmp_path)
    assert isinstance(dev, Device)
    x = np.random.default_rng(0).random((2, 64)).astype(np.float32)
    before = dev.parameters()
    tol = 0 if target == "lava-cpu" else 0.02  # fixed_pt: 8-bit mantissas (quantisation error ≤ ~1.6 %)
    for k, v in params.items():
        np.testing.assert_allclose(before[k], v, atol=tol * max(1.0, np.abs(v).max()), err_msg=k)
    assert dev.step(x[:1], np.array([3])) == {}
    after = dev.parameters()
    assert any(np.abs(after[k] - before[k]).max() > 0 for k in after)  # learned on chip
    dev.load_parameters({k: np.zeros_like(v) for k, v in params.items() if not k.startswith("signal.")})
    assert not np.abs(dev.predict(x)).any()  # zero weights and biases: the readout stays at zero


def _imports() -> dict[str, set[str]]:
    """Module → edgesp-internal modules it imports (module level and inside functions; not TYPE_CHECKING)."""
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        tree = ast.parse(f.read_text())
        skip = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                r = resolve(n)
                if r and r != m:
                    graph[m].add(r)
                    break
    return graph


def test_no_import_cycles_between_modules():
    graph = _imports()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_layering_compilers_never_import_the_device_side():
    graph = _imports()
    bad = sorted(
        (m, d) for m, ds in graph.items() for d in ds if m.startswith("compilers") and d.startswith("firmware_sim")
    )
    assert not bad, bad
    base = ("edgesp.spec", "edgesp.errors", "edgesp.atomic", "edgesp.manifest", "targets")
    bad = sorted(
        (m, d) for m, ds in graph.items() for d in ds if m in base and d.split(".")[0] in ("compilers", "firmware_sim")
    )
    assert not bad, bad
