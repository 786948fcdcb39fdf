"""NIR (Neuromorphic Intermediate Representation) in and out: an edgesp spiking model ↔ a NIR graph.

Export (:func:`to_nir`, :func:`export_nir`): ``Input`` (one time step of block 0's input) → per block its
parametric node (``Affine``/``Linear``/``Conv1d``/``Conv2d``) and parameter-free nodes (``Flatten``,
``AvgPool2d``, neurons by :mod:`edgesp.nir_units`) → ``head`` (``Affine``/``Linear``) → ``readout`` (the head's
readout neuron: a never-firing ``LIF`` (v_threshold = +inf) or ``LI`` for the membrane readout, ``I`` for the
spike count) → ``Output``. A recurrent LIF (spec ``LIF.recurrent``) gets a ``Linear`` node ``blocks{i}_rec``
with edges LIF → rec → LIF, as snnTorch's RLeaky export. The learning set-up is graph metadata
(:mod:`edgesp.nir_meta`). Layers without a NIR node (LayerNorm, ReLU, Tanh, LeakyReLU, Dropout, max pools,
AvgPool1d) and non-spiking models are refused in one line.

Import (:func:`from_nir`, :func:`import_nir`): the graph must be a chain from its ``Input`` to its ``Output``
(nested ``NIRGraph`` nodes are inlined; a neuron ↔ ``Affine``/``Linear`` loop is a recurrent LIF). Leading
``Flatten`` nodes flatten the input shape; each parametric node opens a block; the last parametric node is the
head and must be followed by exactly one readout neuron. NIR holds no time steps, encoding, rule or signal: they
come from the edgesp metadata when present (the learning extension), else from the caller (CLI options).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgesp.errors import NIRError, SpecError
from edgesp.nir_units import DEFAULT_DT, NEURON_TYPES, lif_to_nir, nir_to_neuron, readout_to_nir
from edgesp.spec import (
    LIF,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Flatten,
    Layer,
    Linear,
    ModelSpec,
    OptimizerSpec,
    RuleSpec,
    SignalSpec,
    TemporalSpec,
)

READOUT_NODES = ("lif", "li")
SPIKING_OUTPUT = ("refuse", "membrane")
PARAMETRIC_TYPES = ("Affine", "Linear", "Conv1d", "Conv2d")


def _nir() -> Any:
    try:
        import nir
    except ImportError:
        from edgesp.errors import RuntimeMissingError

        raise RuntimeMissingError("the 'nir' package is not installed: pip install nir==1.0.8") from None
    return nir


# ============================================================================ export
def _layer_node(
    layer: Layer, shape: tuple[int, ...], params: dict[str, np.ndarray], prefix: str, dt: float, where: str
) -> Any:
    """One spec layer → its NIR node (weights float32, as in the checkpoint)."""
    nir = _nir()
    f32 = np.float32
    if isinstance(layer, Linear):
        w = np.ascontiguousarray(params[prefix + "weight"], f32)
        if layer.bias:
            return nir.Affine(weight=w, bias=np.ascontiguousarray(params[prefix + "bias"], f32))
        return nir.Linear(weight=w)
    if isinstance(layer, (Conv1d, Conv2d)):
        w = np.ascontiguousarray(params[prefix + "weight"], f32)
        b = np.ascontiguousarray(params[prefix + "bias"], f32) if layer.bias else np.zeros(layer.out_channels, f32)
        if isinstance(layer, Conv1d):
            return nir.Conv1d(
                input_shape=int(shape[1]), weight=w, stride=layer.stride, padding=layer.padding, dilation=1, groups=1,
                bias=b,
            )  # fmt: skip
        return nir.Conv2d(
            input_shape=(int(shape[1]), int(shape[2])), weight=w, stride=layer.stride, padding=layer.padding,
            dilation=1, groups=1, bias=b,
        )  # fmt: skip
    if isinstance(layer, Flatten):
        return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
    if isinstance(layer, AvgPool2d):
        k = layer.kernel_size
        return nir.AvgPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0]))
    if isinstance(layer, LIF):
        return lif_to_nir(layer, shape, dt, where)
    raise NIRError(
        f"{where}: {type(layer).__name__} has no NIR node (NIR holds Affine/Linear/Conv1d/Conv2d/Flatten/AvgPool2d "
        "and neurons): only spiking models built from those export"
    )


def to_nir(
    spec: ModelSpec,
    params: dict[str, np.ndarray],
    *,
    dt: float = DEFAULT_DT,
    readout_node: str = "lif",
    learning: bool = True,
) -> Any:
    """The NIR graph of a spiking edgesp model (with the learning extension as metadata unless ``learning=False``)."""
    nir = _nir()
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise NIRError(f"dt must be a finite number > 0 (seconds per time step), got {dt!r}")
    if readout_node not in READOUT_NODES:
        raise NIRError(f"readout node must be one of {', '.join(READOUT_NODES)}, got {readout_node!r}")
    if spec.temporal is None:
        raise NIRError(
            f"model {spec.name!r} is not spiking: NIR describes spiking networks; export a --model snn checkpoint"
        )
    if not spec.rule.variant.is_plain:
        raise NIRError(f"SP variant {spec.rule.variant.describe()} has extra parameters NIR cannot hold")
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(spec.block_input_shape())})}
    edges: list[tuple[str, str]] = []
    where: dict[str, str] = {}
    # names sort in graph order between "input" and "output" (nir.read returns nodes sorted by name, and
    # nirtorch 2.6 mis-wires a recurrent subgraph met before its input: snnTorch's import_from_nir then fails)
    total = sum(len(b) for b in spec.blocks) + len(spec.recurrent_blocks) + 2
    width = max(2, len(str(total)))
    counter = iter(range(1, total + 1))

    def label(text: str) -> str:
        return f"l{next(counter):0{width}d}_{text}"

    prev = "input"
    shape = spec.block_input_shape()
    shapes = spec.shapes()
    for i, block in enumerate(spec.blocks):
        prefix = f"blocks.{i}."
        for j, layer in enumerate(block):
            name = label(f"block{i}_{layer.kind}")
            node = _layer_node(layer, shape, params, prefix, dt, f"block {i}, layer {j} ({type(layer).__name__})")
            if j == 0:
                node.metadata = {"edgesp": {"param": f"blocks.{i}", "learns": 1, "rule": spec.rule.name}}
                where[f"blocks.{i}"] = name
            if i == 0 and isinstance(layer, LIF) and "signal_target" not in where:
                where["signal_target"] = name
            nodes[name] = node
            edges.append((prev, name))
            if isinstance(layer, LIF) and layer.recurrent:
                rec = label(f"block{i}_rec")
                nodes[rec] = nir.Linear(weight=np.ascontiguousarray(params[prefix + "rec_weight"], np.float32))
                nodes[rec].metadata = {
                    "edgesp": {"param": f"blocks.{i}.rec_weight", "learns": 1, "rule": spec.rule.name}
                }
                edges += [(name, rec), (rec, name)]
                where[f"blocks.{i}.rec"] = rec
            prev = name
            shape = shapes[i][j]
    head = _layer_node(spec.head, shape, params, "head.", dt, "head")
    head.metadata = {"edgesp": {"param": "head", "learns": 1, "rule": spec.rule.name}}
    hname, rname = label("head"), label("readout")
    nodes[hname] = head
    where["head"] = hname
    lifs = [la for la in spec.blocks[-1] if isinstance(la, LIF)]
    dv_o = float(lifs[-1].dv) if lifs else 0.2
    from edgesp.encoding import num_steps

    nodes[rname] = readout_to_nir(spec.temporal.readout, dv_o, spec.num_classes, num_steps(spec), dt, readout_node)
    nodes["output"] = nir.Output(output_type={"output": np.array([spec.num_classes])})
    edges += [(prev, hname), (hname, rname), (rname, "output")]
    meta: dict[str, Any] = {}
    if learning:
        from edgesp import nir_meta

        meta = {nir_meta.KEY: nir_meta.build(spec, params, where, dt)}
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
    except (ValueError, AssertionError) as e:  # NIR's own type check: a bug here, not a user error
        raise NIRError(f"the NIR graph of {spec.name!r} fails NIR's type check: {e}") from None


def export_nir(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dt: float = DEFAULT_DT,
    readout_node: str = "lif",
    learning: bool = True,
) -> dict[str, Any]:
    """Checkpoint → NIR file (HDF5, written atomically). Returns a summary (nodes, edges, metadata keys)."""
    from edgesp.atomic import atomic_path
    from edgesp.checkpoint import load_checkpoint

    spec, params, _ = load_checkpoint(checkpoint)
    graph = to_nir(spec, params, dt=dt, readout_node=readout_node, learning=learning)
    nir = _nir()
    with atomic_path(out) as tmp:
        nir.write(str(tmp), graph)
    return {
        "model": spec.name,
        "nodes": {k: type(n).__name__ for k, n in graph.nodes.items()},
        "edges": list(graph.edges),
        "learning_metadata": learning,
        "dt": dt,
    }


# ============================================================================ import
@dataclass
class Imported:
    """An imported model: spec, parameters (spec names, float32) and notes on every conversion made."""

    spec: ModelSpec
    params: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    recorded: bool = False  # the learning set-up came from edgesp metadata
    learning: dict[str, Any] | None = None  # the recorded learning JSON (see edgesp.nir_meta), if any


def _shape(types: dict[str, Any] | None, what: str) -> tuple[int, ...]:
    v = None if not types else next(iter(types.values()))
    if v is None:
        raise NIRError(f"{what} has no shape: write the NIR file with input/output types (graph.infer_types())")
    return tuple(int(n) for n in np.asarray(v).reshape(-1))


def _inline(graph: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Nodes and edges with nested NIRGraph nodes inlined as ``outer.inner`` (their Input/Output dropped)."""
    nir = _nir()
    nodes: dict[str, Any] = {}
    edges = list(dict.fromkeys((str(a), str(b)) for a, b in graph.edges))
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.NIRGraph):
            nodes[name] = node
            continue
        sub_nodes, sub_edges = _inline(node)
        ins = [k for k, n in sub_nodes.items() if isinstance(n, nir.Input)]
        outs = [k for k, n in sub_nodes.items() if isinstance(n, nir.Output)]
        if len(ins) != 1 or len(outs) != 1:
            raise NIRError(f"subgraph {name!r} has {len(ins)} inputs and {len(outs)} outputs: edgesp needs one each")
        for k, n in sub_nodes.items():
            if k not in (ins[0], outs[0]):
                nodes[f"{name}.{k}"] = n
        firsts = [f"{name}.{b}" for a, b in sub_edges if a == ins[0]]
        lasts = [f"{name}.{a}" for a, b in sub_edges if b == outs[0]]
        inner = [(f"{name}.{a}", f"{name}.{b}") for a, b in sub_edges if ins[0] not in (a, b) and outs[0] not in (a, b)]
        new: list[tuple[str, str]] = []
        for a, b in edges:
            srcs = lasts if a == name else [a]
            dsts = firsts if b == name else [b]
            new += [(s, d) for s in srcs for d in dsts]
        edges = list(dict.fromkeys(new + inner))
    return nodes, edges


def _chain(graph: Any) -> tuple[list[tuple[str, Any]], dict[str, tuple[str, Any]], tuple[int, ...], int]:
    """The nodes from Input to Output in order, the recurrent loops {neuron: (rec node name, node)}, the input
    shape and the output size."""
    nir = _nir()
    nodes, edges = _inline(graph)
    for a, b in edges:
        for n in (a, b):
            if n not in nodes:
                raise NIRError(f"edge ({a!r}, {b!r}) names a node {n!r} that the graph does not have")
    rec: dict[str, tuple[str, Any]] = {}
    for a, b in edges:
        if (
            (b, a) in edges
            and type(nodes[a]).__name__ in NEURON_TYPES
            and isinstance(nodes[b], (nir.Affine, nir.Linear))
        ):
            if [e for e in edges if b in e and e not in ((a, b), (b, a))]:
                raise NIRError(f"recurrent weights {b!r} of {a!r} connect to other nodes too: edgesp cannot map it")
            rec[a] = (b, nodes[b])
    loop = {(a, r) for a, (r, _) in rec.items()} | {(r, a) for a, (r, _) in rec.items()}
    rest = [e for e in edges if e not in loop]
    ins = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    outs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
    if len(ins) != 1 or len(outs) != 1:
        raise NIRError(f"the graph has {len(ins)} Input and {len(outs)} Output nodes: edgesp maps graphs with one each")
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    pred: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in rest:
        succ[a].append(b)
        pred[b].append(a)
    order, cur, seen = [], ins[0], set()
    while cur != outs[0]:
        if cur in seen:
            raise NIRError(f"the graph has a cycle through {cur!r} that is not a neuron ↔ Affine/Linear recurrent loop")
        seen.add(cur)
        if len(succ[cur]) != 1:
            raise NIRError(
                f"node {cur!r} has {len(succ[cur])} outgoing edges: edgesp maps chains (Input → … → Output, "
                "recurrent loops allowed), not branches or skips"
            )
        nxt = succ[cur][0]
        if len(pred[nxt]) != 1:
            raise NIRError(f"node {nxt!r} has {len(pred[nxt])} incoming edges: edgesp maps chains, not merges")
        order.append(cur)
        cur = nxt
    unused = set(nodes) - set(order) - {outs[0]} - {r for r, _ in rec.values()}
    if unused:
        raise NIRError(f"nodes {sorted(unused)} are not on the path from the Input to the Output")
    in_shape = _shape(nodes[ins[0]].input_type, f"Input node {ins[0]!r}")
    out_size = math.prod(_shape(nodes[outs[0]].output_type, f"Output node {outs[0]!r}"))
    return [(k, nodes[k]) for k in order[1:]], rec, in_shape, out_size


def _ints(v: Any, n: int, what: str) -> tuple[int, ...]:
    a = np.asarray(v).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, n)
    if a.size != n:
        raise NIRError(f"{what} has {a.size} values, expected {n}")
    return tuple(int(x) for x in a)


def _parametric(node: Any, name: str, shape: tuple[int, ...]) -> tuple[Layer, dict[str, np.ndarray]]:
    kind = type(node).__name__
    f32 = np.float32
    w = np.asarray(node.weight, f32)
    if kind in ("Affine", "Linear"):
        if w.ndim != 2:
            raise NIRError(f"node {name!r}: {kind} weight has shape {w.shape}, edgesp needs (out, in)")
        if len(shape) != 1:
            raise NIRError(
                f"node {name!r}: {kind} on a {shape} activation: NIR's Affine maps flat vectors, add a Flatten"
            )
        p = {"weight": w}
        if kind == "Affine":
            p["bias"] = np.asarray(node.bias, f32).reshape(-1)
        return Linear(w.shape[1], w.shape[0], bias=kind == "Affine"), p
    dims = 1 if kind == "Conv1d" else 2
    if w.ndim != dims + 2:
        raise NIRError(f"node {name!r}: {kind} weight has shape {w.shape}")
    if int(np.asarray(node.groups)) != 1 or any(d != 1 for d in _ints(node.dilation, dims, f"{name}.dilation")):
        raise NIRError(f"node {name!r}: {kind} with groups/dilation ≠ 1 is not supported by edgesp")
    k = w.shape[2:]
    if len(set(k)) != 1:
        raise NIRError(f"node {name!r}: non-square kernel {k}: edgesp's Conv2d is square")
    stride = _ints(node.stride, dims, f"{name}.stride")
    pad = node.padding
    if isinstance(pad, (str, bytes)):
        pad = pad.decode() if isinstance(pad, bytes) else pad
        if pad == "valid":
            pad = 0
        elif pad == "same" and k[0] % 2 == 1 and set(stride) == {1}:
            pad = k[0] // 2
        else:
            raise NIRError(f"node {name!r}: padding {pad!r} with kernel {k} and stride {stride} has no edgesp form")
    pads = _ints(pad, dims, f"{name}.padding")
    if len(set(stride)) != 1 or len(set(pads)) != 1:
        raise NIRError(f"node {name!r}: unequal strides/paddings {stride}/{pads}: edgesp's Conv2d uses one of each")
    cls = Conv1d if dims == 1 else Conv2d
    layer = cls(w.shape[1], w.shape[0], k[0], stride=stride[0], padding=pads[0])
    return layer, {"weight": w, "bias": np.asarray(node.bias, f32).reshape(-1)}


def _free(node: Any, name: str, shape: tuple[int, ...]) -> Layer:
    kind = type(node).__name__
    if kind == "Flatten":
        nd = len(shape)
        start, end = int(np.asarray(node.start_dim)), int(np.asarray(node.end_dim))
        if start % max(nd, 1) != 0 or end % max(nd, 1) != (nd - 1) % max(nd, 1):
            raise NIRError(
                f"node {name!r}: Flatten(start_dim={start}, end_dim={end}) of a {shape} activation keeps some "
                "dimensions; edgesp's Flatten flattens all of them (NIR dims exclude the batch)"
            )
        return Flatten()
    if kind == "AvgPool2d":
        k = _ints(node.kernel_size, 2, f"{name}.kernel_size")
        s = _ints(node.stride, 2, f"{name}.stride")
        p = _ints(node.padding, 2, f"{name}.padding")
        if len(set(k)) != 1 or s != k or any(p):
            raise NIRError(
                f"node {name!r}: AvgPool2d kernel {k} stride {s} padding {p}: edgesp pools square, "
                "non-overlapping windows without padding"
            )
        return AvgPool2d(k[0])
    raise NIRError(
        f"node {name!r} of type {kind} has no edgesp layer (edgesp maps Affine, Linear, Conv1d, Conv2d, Flatten, "
        f"AvgPool2d, {', '.join(NEURON_TYPES)})"
    )


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def _agrees(derived: Layer, stored: Layer, bias: np.ndarray | None) -> bool:
    """True if the recorded layer describes the same computation as the one read from the nodes (floats within
    1e-6; a recorded bias=False matches an all-zero NIR conv bias; a non-spiking LIF's threshold is moot)."""
    if type(derived) is not type(stored):
        return False
    for f in fields(derived):
        a, b = getattr(derived, f.name), getattr(stored, f.name)
        if f.name == "bias" and isinstance(a, bool) and a is True and b is False:
            if bias is None or np.any(bias != 0):
                return False
            continue
        if isinstance(derived, LIF) and not derived.spiking and f.name in ("threshold", "reset"):
            continue
        if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
            if not _close(a, float(b)):
                return False
        elif a != b:
            return False
    return True


@dataclass
class _Block:
    layers: list[Layer]
    params: dict[str, np.ndarray]
    shapes: list[tuple[int, ...]]


def from_nir(
    graph: Any,
    *,
    dt: float | None = None,
    time_steps: int | None = None,
    encoding: str | None = None,
    rule: RuleSpec | None = None,
    rule_changes: dict[str, Any] | None = None,
    signal: SignalSpec | None = None,
    spiking_output: str = "refuse",
    seed: int = 0,
    name: str | None = None,
    default_name: str = "nir",
) -> Imported:
    """A NIR graph → an edgesp spec and parameters. ``dt`` defaults to the recorded one, else
    :data:`DEFAULT_DT` (snnTorch's). The rule: ``rule``, else the recorded one, else sp-voltage (loss v1, SGD
    lr 1e-3); ``rule_changes`` (keys name, loss, temperature, optimizer, lr) then edits it (a new rule name without
    a temperature takes that rule's default temperature). ``spiking_output='membrane'`` reads a spiking output
    layer's membrane without its spikes and resets (not the same network: refused by default)."""
    from edgesp import nir_meta
    from edgesp.checkpoint import check_finite, check_params
    from edgesp.functional import init_params

    if spiking_output not in SPIKING_OUTPUT:
        raise NIRError(f"spiking_output must be one of {', '.join(SPIKING_OUTPUT)}, got {spiking_output!r}")
    recorded = nir_meta.parse(getattr(graph, "metadata", None))
    notes: list[str] = []
    if dt is None:
        dt = recorded.dt if recorded else DEFAULT_DT
    if not (math.isfinite(dt) and dt > 0):
        raise NIRError(f"dt must be a finite number > 0, got {dt}")
    chain, rec, in_shape, out_size = _chain(graph)
    shape = in_shape
    items = list(chain)
    while items and type(items[0][1]).__name__ == "Flatten":
        shape = (math.prod(shape),)
        notes.append(f"leading Flatten {items[0][0]!r}: the model's input is flattened to {shape}")
        items.pop(0)
    par = [k for k, (_, n) in enumerate(items) if type(n).__name__ in PARAMETRIC_TYPES]
    if len(par) < 2:
        raise NIRError(
            f"the graph has {len(par)} weight node(s): edgesp needs at least one block (weights → neuron) and a head "
            "(Affine/Linear → readout neuron)"
        )
    if par[0] != 0:
        nm, nd = items[0]
        raise NIRError(f"node {nm!r} ({type(nd).__name__}) comes before the first weight node: edgesp cannot map it")
    head_k = par[-1]
    blocks: list[_Block] = []
    block_in = shape
    for nm, node in items[:head_k]:
        kind = type(node).__name__
        if kind in PARAMETRIC_TYPES:
            layer, p = _parametric(node, nm, shape)
            try:
                shape = layer.out_shape(shape)
            except SpecError as e:
                raise NIRError(f"node {nm!r}: {e}") from None
            blocks.append(_Block([layer], p, [shape]))
            continue
        b = blocks[-1]
        if kind in NEURON_TYPES:
            neuron = nir_to_neuron(node, nm, shape, dt)
            if neuron.infinite_threshold:
                raise NIRError(f"node {nm!r}: a hidden {kind} with an infinite threshold never fires")
            lif = neuron.lif
            if neuron.gain != 1.0:
                b.params = {key: v * np.float32(neuron.gain) for key, v in b.params.items()}
                notes.append(
                    f"node {nm!r}: input gain {neuron.gain:g} folded into the weights of block {len(blocks) - 1}"
                )
            if nm in rec:
                rname, rnode = rec[nm]
                if len(b.layers) != 1 or not isinstance(b.layers[0], Linear) or len(shape) != 1:
                    raise NIRError(f"recurrent neuron {nm!r} must follow an Affine/Linear directly (flat activation)")
                w_rec = np.asarray(rnode.weight, np.float32)
                if w_rec.shape != (shape[0], shape[0]):
                    raise NIRError(f"recurrent weights {rname!r} have shape {w_rec.shape}, need {(shape[0], shape[0])}")
                b.params["rec_weight"] = w_rec * np.float32(neuron.gain)
                if type(rnode).__name__ == "Affine" and np.any(np.asarray(rnode.bias) != 0):
                    if "bias" not in b.params:
                        raise NIRError(f"recurrent bias of {rname!r} needs a block bias: the block's node is Linear")
                    b.params["bias"] = b.params["bias"] + np.asarray(rnode.bias, np.float32) * np.float32(neuron.gain)
                    notes.append(f"recurrent bias of {rname!r} added to block {len(blocks) - 1}'s bias")
                lif = replace(lif, recurrent=True)
            layer: Layer = lif
        else:
            layer = _free(node, nm, shape)
        try:
            shape = layer.out_shape(shape)
        except SpecError as e:
            raise NIRError(f"node {nm!r}: {e}") from None
        b.layers.append(layer)
        b.shapes.append(shape)
    hname, hnode = items[head_k]
    if type(hnode).__name__ not in ("Affine", "Linear"):
        raise NIRError(f"the last weight node {hname!r} is a {type(hnode).__name__}: edgesp's head is Affine/Linear")
    head, head_p = _parametric(hnode, hname, shape)
    tail = items[head_k + 1 :]
    if len(tail) != 1 or type(tail[0][1]).__name__ not in NEURON_TYPES:
        raise NIRError(
            f"the head {hname!r} is followed by {[type(n).__name__ for _, n in tail]}: edgesp needs exactly one "
            "readout neuron after it (LIF with v_threshold=inf or LI: membrane; I: spike count)"
        )
    if out_size != head.out_features:
        raise NIRError(f"the Output has {out_size} values but the head {hname!r} has {head.out_features} outputs")
    rname, rnode = tail[0]
    rkind = type(rnode).__name__
    if rname in rec:
        raise NIRError(f"the readout {rname!r} is recurrent: edgesp's readout is not")
    lifs = [la for la in blocks[-1].layers if isinstance(la, LIF)]
    dv_last = float(lifs[-1].dv) if lifs else 0.2
    rec_temporal = recorded.spec.temporal if recorded else None
    if rkind == "I" and not (rec_temporal and rec_temporal.readout == "membrane" and dv_last == 0):
        readout = "spike_count"
        gain_per_step = dt * float(np.asarray(rnode.r).reshape(-1)[0])
        neuron = None
    else:
        neuron = nir_to_neuron(rnode, rname, (head.out_features,), dt)
        readout = "membrane"
        if neuron.lif.spiking:
            if spiking_output == "refuse":
                raise NIRError(
                    f"the output neuron {rname!r} ({rkind}, v_threshold {neuron.lif.threshold:g}) fires, but edgesp's "
                    "head is a non-spiking readout: export it with an infinite threshold, or import with "
                    "--spiking-output membrane to read its membrane without spikes or resets (a different network)"
                )
            notes.append(
                f"output neuron {rname!r} read as a membrane readout: its threshold {neuron.lif.threshold:g} and "
                "resets are dropped (--spiking-output membrane)"
            )
        if neuron.lif.du != 1.0:
            raise NIRError(
                f"the readout {rname!r} filters its current (du {neuron.lif.du:g}): edgesp's readout has du = 1"
            )
        if neuron.lif.bias != 0:
            raise NIRError(f"the readout {rname!r} has v_leak ≠ 0: edgesp's readout has no bias")
        if not _close(neuron.lif.dv, dv_last):
            raise NIRError(
                f"the readout {rname!r} decays with dv {neuron.lif.dv:g} but edgesp's membrane readout decays with the "
                f"last hidden LIF's dv {dv_last:g} (a spec limitation): give both the same time constant"
            )
    temporal = TemporalSpec(
        time_steps=time_steps or (rec_temporal.time_steps if rec_temporal else TemporalSpec().time_steps),
        encoding=encoding or (rec_temporal.encoding if rec_temporal else TemporalSpec().encoding),
        readout=readout,
        seed=rec_temporal.seed if rec_temporal else seed,
    )
    steps = temporal.time_steps
    if neuron is None:  # I: logits = dt·r·Σ_t (W s + b) = (dt·r·T) (W mean s + b)
        g = gain_per_step * steps
        if abs(g - 1) > 1e-6:
            head_p = {k: v * np.float32(g) for k, v in head_p.items()}
            notes.append(f"readout {rname!r}: integrator gain dt·r·T = {g:g} folded into the head")
    elif neuron.gain != 1.0:
        head_p = {k: v * np.float32(neuron.gain) for k, v in head_p.items()}
        notes.append(f"readout {rname!r}: input gain {neuron.gain:g} folded into the head")
    input_shape = (*block_in, steps) if temporal.encoding == "sequence" else block_in
    spec_blocks = [tuple(b.layers) for b in blocks]
    # values NIR cannot hold exactly come from the recorded spec where it agrees with the nodes
    if recorded:
        rs = recorded.spec
        same = len(rs.blocks) == len(spec_blocks) and all(
            len(a) == len(b) and all(_agrees(x, y, blocks[i].params.get("bias")) for x, y in zip(a, b, strict=True))
            for i, (a, b) in enumerate(zip(spec_blocks, rs.blocks, strict=True))
        )
        same = same and _agrees(head, rs.head, head_p.get("bias"))
        if same:
            spec_blocks = [tuple(b) for b in rs.blocks]
            head = rs.head
            if (
                rs.block_input_shape() == tuple(block_in)
                and (rs.temporal and rs.temporal.encoding) == temporal.encoding
            ):
                input_shape = rs.input_shape
        else:
            notes.append(
                "the graph differs from the recorded edgesp spec (edited by another tool?): the nodes are used"
            )
    params: dict[str, np.ndarray] = {}
    for i, b in enumerate(blocks):
        keep = set(spec_blocks[i][0].param_shapes()) | {"rec_weight"}
        params.update({f"blocks.{i}.{k}": v for k, v in b.params.items() if k in keep})
    params.update({f"head.{k}": v for k, v in head_p.items() if k in head.param_shapes()})
    base = recorded.spec if recorded else None
    rule = rule or (base.rule if base else RuleSpec(name="sp-voltage", optimizer=OptimizerSpec(name="sgd")))
    if rule_changes:
        ch = dict(rule_changes)
        opt = {k: ch.pop(key) for key, k in (("optimizer", "name"), ("lr", "lr")) if key in ch}
        if opt:
            ch["optimizer"] = replace(rule.optimizer, **opt)
        if "name" in ch and "temperature" not in ch:
            ch["temperature"] = None
        rule = replace(rule, **ch)
    signal = signal or (base.signal if base else SignalSpec())
    try:
        spec = ModelSpec(
            input_shape=input_shape,
            num_classes=head.out_features,
            blocks=tuple(spec_blocks),
            head=head,
            signal=signal,
            rule=rule,
            temporal=temporal,
            name=name or (base.name if base else default_name),
        )
    except SpecError as e:
        raise NIRError(f"the graph does not make a valid edgesp model: {e}") from None
    want = spec.param_shapes()
    if (
        recorded
        and tuple(recorded.signal_weight.shape) == tuple(want["signal.weight"])
        and signal == recorded.spec.signal
    ):
        params["signal.weight"], params["signal.bias"] = recorded.signal_weight, recorded.signal_bias
    else:
        fresh = init_params(spec, seed)
        params["signal.weight"], params["signal.bias"] = fresh["signal.weight"], fresh["signal.bias"]
        notes.append(f"no recorded signal weights: W_S drawn fresh (N(0, {spec.signal.init_std:g}²), seed {seed})")
    params = {k: np.ascontiguousarray(v, np.float32) for k, v in params.items()}
    try:
        check_params(spec, params)
        check_finite(params, "NIR import")
    except Exception as e:
        raise NIRError(str(e)) from None
    if recorded:
        from edgesp.nir_meta import fixed_point_format

        was = recorded.learning.get("fixed_point", {}).get("weight_exponent")
        now = fixed_point_format(spec, params)["weight_exponent"]
        if was is not None and was != now:
            notes.append(
                f"Loihi weight exponents recorded {was} differ from those of the weights now {now} (the weights "
                "changed after export): compile derives them from the weights"
            )
    return Imported(spec, params, notes, recorded is not None, recorded.learning if recorded else None)


def read_nir(path: str | os.PathLike) -> Any:
    """``nir.read`` with one-line errors."""
    nir = _nir()
    p = Path(path)
    if not p.is_file():
        raise NIRError(f"NIR file {p} not found")
    try:
        return nir.read(str(p))
    except Exception as e:  # h5py/nir raise OSError, KeyError, ValueError, AssertionError for bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NIRError(f"{p} is not a readable NIR file ({type(e).__name__}: {msg})") from None


def import_nir(path: str | os.PathLike, out: str | os.PathLike, **kwargs: Any) -> Imported:
    """NIR file → edgesp checkpoint (``out``, written atomically). ``kwargs`` as :func:`from_nir`."""
    from edgesp.checkpoint import save_checkpoint

    kwargs.setdefault("default_name", Path(path).stem or "nir")
    imp = from_nir(read_nir(path), **kwargs)
    save_checkpoint(
        out, imp.spec, imp.params, extra={"imported_from": str(path), "nir_notes": imp.notes, "recorded": imp.recorded}
    )
    return imp
