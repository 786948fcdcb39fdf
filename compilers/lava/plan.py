"""Mapping of layers to neuromorphic cores, the fit check, and the planned memory.

A layer (SPDense synapses + its compartments) is split over cores by output neurons. Each neuron has R
compartments (1 sample stream + K target streams; the streams are assumed time-multiplexed through the
core's single copy of the synaptic memory, so synapses are counted once and neuron state R times):

    neurons per core  = min(neurons_per_core // R, synapses_per_core // (n_in + 1))     (+1: bias synapse)
    cores(layer)      = ceil(n_out / neurons per core)
    input axons/core  = R·n_in ≤ fan_in   (block 0 with hidden placement: n_in, the sample only)
    output targets per neuron = cores of the next layer ≤ fan_out

A recurrent block (W_rec, H×H) keeps its recurrent synapses on the cores of its own neurons: each neuron has
n_in + 1 + H synapses, each core receives rows·H more axons (every stream's spikes of the previous step), and
the block's spikes go to its own cores as well as to the next layer's:

    neurons per core  = min(neurons_per_core // R, synapses_per_core // (n_in + 1 + H))
    input axons/core  = R_in·n_in + R·H ≤ fan_in
    output targets per neuron = cores of the next layer + cores of this layer ≤ fan_out

Memory: synapses (n_in + 1 [+ H])·n_out × weight_bits; state per compartment u, v (24-bit each on Loihi, float64
each in the floating_pt simulation); the learning engine's third factor δ per compartment (16-bit / float64).
The readout (head) uses one row. The target-signal table (hidden placement: block 0's target current,
C·H_0 values; input placement: the target input), the input injection and, for a learned signal, the W_S
update run on the host/embedded CPUs and are not counted as neuromorphic cores.
"""

from __future__ import annotations

import math
from typing import Any

from compilers.lava import rule
from compilers.lava.network_desc import NetDesc
from edgesp.errors import TargetError
from targets import Target


def _limit(nm: dict[str, Any], key: str) -> int | None:
    v = nm.get(key)
    return int(v) if v else None


def plan(desc: NetDesc, target: Target) -> dict[str, Any]:
    """Assign cores to every layer; raise a one-line TargetError when the model does not fit the target."""
    nm = dict(target.neuromorphic)
    npc, spc = _limit(nm, "neurons_per_core"), _limit(nm, "synapses_per_core")
    fan_in, fan_out = _limit(nm, "fan_in"), _limit(nm, "fan_out")
    max_cores = _limit(nm, "cores")
    chips = int(nm.get("chips", 1) or 1)
    fixed = desc.fixed
    wbits = int(nm.get("weight_bits", 8)) if fixed else 64  # the floating_pt simulation stores float64
    state_bytes = 2 * rule.UV_BITS / 8 if fixed else 16.0
    delta_bytes = rule.DELTA_BITS / 8 if fixed else 8.0
    layers: list[dict[str, Any]] = []
    next_core = 0
    for i, la in enumerate(desc.layers):
        rows = 1 if la.kind == "readout" else desc.rows
        in_rows = desc.in_rows if i == 0 else rows  # hidden placement: only the sample enters block 0's synapses
        rec = la.n_out if la.recurrent else 0  # recurrent synapses per neuron (H) and axons per stream
        syn_per_neuron = la.n_in + 1 + rec
        axons = in_rows * la.n_in + rows * rec
        where = f"layer {i} ({la.kind}, {la.n_in}->{la.n_out}{' recurrent' if rec else ''}, {rows} streams)"
        if fan_in is not None and axons > fan_in:
            parts = f" ({in_rows}×{la.n_in} feed-forward + {rows}×{rec} recurrent)" if rec else ""
            raise TargetError(
                f"{where} needs {axons} input axons per core{parts} > fan-in {fan_in} of "
                f"{target.name}: reduce the input size or --width"
            )
        per_core = la.n_out
        if npc is not None:
            per_core = min(per_core, npc // rows)
        if spc is not None:
            per_core = min(per_core, spc // syn_per_neuron)
        if per_core < 1:
            raise TargetError(
                f"{where}: one neuron needs {syn_per_neuron} synapses and {rows} compartments, more "
                f"than a core of {target.name} holds ({spc} synapses, {npc} neurons): reduce --width"
            )
        n_cores = math.ceil(la.n_out / per_core)
        cores = list(range(next_core, next_core + n_cores))
        next_core += n_cores
        per = []
        for c in range(n_cores):
            n = min(per_core, la.n_out - c * per_core)
            syn = syn_per_neuron * n
            per.append(
                {
                    "core": cores[c],
                    "neurons": n,
                    "compartments": n * rows,
                    "synapses": syn,
                    "synapse_bytes": math.ceil(syn * wbits / 8),
                    "neuron_bytes": math.ceil(n * rows * (state_bytes + delta_bytes)),
                }
            )
        layers.append(
            {
                "layer": i,
                "kind": la.kind,
                "n_in": la.n_in,
                "n_out": la.n_out,
                "rows": rows,
                "recurrent": bool(rec),
                "cores": cores,
                "per_core": per,
            }
        )
        la.cores = cores
    for i in range(len(layers) - 1):
        nxt = len(layers[i + 1]["cores"]) + (len(layers[i]["cores"]) if layers[i]["recurrent"] else 0)
        if fan_out is not None and nxt > fan_out:
            raise TargetError(f"layer {i} fans out to {nxt} cores > fan-out {fan_out} of {target.name}: reduce --width")
    if max_cores is not None and next_core > max_cores * chips:
        sizes = ", ".join(
            f"layer {d['layer']} {d['n_in']}->{d['n_out']}×{d['rows']} streams: {len(d['cores'])}" for d in layers
        )
        raise TargetError(
            f"model needs {next_core} cores but {target.name} has {max_cores * chips} ({sizes}): reduce --width/--depth"
        )
    cores = [pc for d in layers for pc in d["per_core"]]
    syn_b = sum(c["synapse_bytes"] for c in cores)
    neu_b = sum(c["neuron_bytes"] for c in cores)
    return {
        "cores_used": next_core,
        "cores_available": max_cores * chips if max_cores else None,
        "layers": layers,
        "planned_memory": {
            "synapse_bytes": syn_b,
            "neuron_bytes": neu_b,
            "total_bytes": syn_b + neu_b,
            "update_step_peak_bytes": syn_b + neu_b,
            "weight_bits": wbits,
            "per_core": cores,
        },
    }
