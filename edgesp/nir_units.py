"""Neuron conventions between edgesp's discrete-time LIF and NIR's continuous-time neuron nodes.

edgesp (:class:`edgesp.spec.LIF`, Loihi CUBA), per time step:

    u[t] = (1 − du) u[t−1] + a[t];   v[t] = (1 − dv) v[t−1] + u[t] + bias;   s = 1[v > θ];  reset v

NIR describes the same neurons as ODEs without a time step: LIF  τ v' = (v_leak − v) + R I;
CubaLIF  τ_syn I' = −I + w_in S,  τ_mem v' = (v_leak − v) + R I;  IF  v' = R I;  LI / CubaLI / I the
non-firing forms. Forward Euler with a step dt (the current first, then the voltage from the new current —
snnTorch's and Lava's order) gives

    LIF:      v[t] = (1 − dt/τ) v[t−1] + (dt/τ)·R·a[t] + (dt/τ)·v_leak
    CubaLIF:  I[t] = (1 − dt/τ_syn) I[t−1] + (dt/τ_syn)·w_in·a[t];
              v[t] = (1 − dt/τ_mem) v[t−1] + (dt/τ_mem)·R·I[t] + (dt/τ_mem)·v_leak
    IF:       v[t] = v[t−1] + dt·R·a[t]

so  du = dt/τ_syn (1 for LIF/IF),  dv = dt/τ (0 for IF),  bias = dv·v_leak,  threshold = v_threshold, and an
input gain g = (dt/τ)·R (LIF), (dt/τ_syn)·w_in·(dt/τ_mem)·R (CubaLIF), dt·R (IF) that edgesp has no field
for: on import g multiplies the weights and bias of the block's parametric layer (exact: every layer between
them is linear); edgesp exports g = 1 (R = τ/dt, w_in = τ_syn/dt, R = 1/dt for IF), snnTorch's convention.
snnTorch's β = 1 − dv and α = 1 − du (its exporter writes τ = dt/(1 − β) with dt = 1e-4, which is
:data:`DEFAULT_DT`). NIR's reset sets v to v_reset; edgesp's ``reset='zero'`` is v_reset = 0 and
``'subtract'`` (v − θ) has no NIR form. Values read from float32 arrays are rounded to 7 significant digits
(float32 holds 7.2), from float64 arrays to 12 (unless dt/τ or 1 − dt/τ is a float32 number to 1e-12: a
float32 β written into float64 arrays, as snnTorch's RLeaky export does), so that τ = dt/dv → dv = dt/τ gives dv
back exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesp.errors import NIRError
from edgesp.spec import LIF

DEFAULT_DT = 1e-4  # snnTorch's export/import time step (snntorch.export_nir, snntorch.import_nir)
GAIN_TOL = 1e-6  # |g − 1| below this is float32 storage noise (snnTorch writes R = 5.0000005 for β = 0.8)

NEURON_TYPES = ("LIF", "CubaLIF", "IF", "LI", "CubaLI", "I")


def snap(x: float, dtype: Any) -> float:
    """x rounded to the precision of the array it was derived from (7 significant digits for float32 and
    narrower, 12 for float64)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    digits = 7 if np.dtype(dtype).itemsize <= 4 else 12
    return float(f"{x:.{digits}g}")


def uniform(node: Any, field: str, name: str, shape: tuple[int, ...]) -> tuple[float, Any]:
    """The one value of a per-neuron parameter array (edgesp has one value per layer), and its dtype."""
    arr = np.asarray(getattr(node, field))
    if arr.size == 0:
        raise NIRError(f"node {name!r}: {field} is empty")
    if arr.shape not in ((), (1,)) and arr.size != math.prod(shape):
        raise NIRError(f"node {name!r}: {field} has shape {arr.shape} but the layer's activation is {shape}")
    flat = arr.reshape(-1).astype(np.float64)
    if not np.all(flat == flat[0]):
        raise NIRError(
            f"node {name!r}: {field} differs between neurons (min {flat.min():g}, max {flat.max():g}); "
            "edgesp's LIF has one value per layer: make it uniform before exporting"
        )
    return float(flat[0]), arr.dtype


@dataclass(frozen=True)
class Neuron:
    """A NIR neuron read as edgesp's LIF and the input gain g to fold into the block's parametric layer."""

    lif: LIF
    gain: float
    infinite_threshold: bool = False


def _full(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float64)


def lif_to_nir(lif: LIF, shape: tuple[int, ...], dt: float, where: str) -> Any:
    """edgesp LIF → the NIR node with the same discrete dynamics at step dt (input gain 1)."""
    import nir

    du, dv = float(lif.du), float(lif.dv)
    if lif.spiking and lif.reset != "zero":
        raise NIRError(
            f"{where}: LIF reset '{lif.reset}' (v − θ) has no NIR form (NIR resets v to v_reset): "
            "use reset 'zero' to export this model"
        )
    if du == 0:
        raise NIRError(f"{where}: LIF du = 0 (a current that never decays) has no finite NIR time constant")
    if dv == 0 and lif.bias != 0:
        raise NIRError(f"{where}: LIF bias {lif.bias:g} with dv = 0 has no NIR form (IF has no v_leak)")
    if dv == 0 and du < 1:
        raise NIRError(f"{where}: LIF du = {du:g} < 1 with dv = 0 has no NIR node (there is no current-based IF)")
    thr = _full(shape, lif.threshold)
    zero = _full(shape, 0.0)
    v_leak = _full(shape, lif.bias / dv) if dv > 0 else zero
    if dv == 0:  # IF / I: v' = R I, gain dt·R = 1
        r = _full(shape, 1.0 / dt)
        return nir.IF(r=r, v_threshold=thr, v_reset=zero) if lif.spiking else nir.I(r=r)
    tau = _full(shape, dt / dv)
    r = tau / dt
    if du == 1:
        if lif.spiking:
            return nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=thr, v_reset=zero)
        return nir.LI(tau=tau, r=r, v_leak=v_leak)
    tau_syn = _full(shape, dt / du)
    w_in = tau_syn / dt
    if lif.spiking:
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=r, v_leak=v_leak, v_threshold=thr, v_reset=zero, w_in=w_in)
    return nir.CubaLI(tau_syn=tau_syn, tau_mem=tau, r=r, v_leak=v_leak, w_in=w_in)


def _decay(node: Any, field: str, name: str, shape: tuple[int, ...], dt: float) -> tuple[float, float]:
    """(dt/τ snapped, dt/τ raw) for the time constant ``field``; refuses τ < dt (decay above 1)."""
    tau, dtype = uniform(node, field, name, shape)
    if not tau > 0:
        raise NIRError(f"node {name!r}: {field} = {tau:g} must be > 0")
    d = dt / tau if math.isfinite(tau) else 0.0
    if any(abs(float(np.float32(x)) - x) <= 1e-12 * max(1.0, abs(x)) for x in (d, 1.0 - d)):
        dtype = np.float32  # a float32 decay (e.g. snnTorch's β) written into float64 arrays: read it at float32
    if d > 1 + 1e-9:
        raise NIRError(
            f"node {name!r}: {field} = {tau:g} is shorter than the time step dt = {dt:g} (decay {d:.3g} > 1): "
            "pass the dt the model was built for (--dt)"
        )
    return min(snap(d, dtype), 1.0), d


def nir_to_neuron(node: Any, name: str, shape: tuple[int, ...], dt: float) -> Neuron:
    """A NIR neuron node → edgesp LIF + input gain (see the module docstring for the algebra)."""
    kind = type(node).__name__
    spiking = kind in ("LIF", "CubaLIF", "IF")
    if kind in ("LIF", "LI"):
        dv, dv_raw = _decay(node, "tau", name, shape, dt)
        r, _ = uniform(node, "r", name, shape)
        du, gain = 1.0, dv_raw * r
    elif kind in ("CubaLIF", "CubaLI"):
        du, du_raw = _decay(node, "tau_syn", name, shape, dt)
        dv, dv_raw = _decay(node, "tau_mem", name, shape, dt)
        r, _ = uniform(node, "r", name, shape)
        w_in, _ = uniform(node, "w_in", name, shape)
        gain = du_raw * w_in * dv_raw * r
        if du == 0:
            raise NIRError(f"node {name!r}: tau_syn is infinite (du = 0): edgesp needs a decaying current")
    elif kind in ("IF", "I"):
        r, _ = uniform(node, "r", name, shape)
        du, dv, gain = 1.0, 0.0, dt * r
    else:
        raise NIRError(f"node {name!r} of type {kind} is not a neuron")
    bias = 0.0
    if kind not in ("IF", "I"):
        v_leak, dtype = uniform(node, "v_leak", name, shape)
        bias = snap(dv * v_leak, dtype)
    threshold, infinite = 1.0, False
    if spiking:
        thr, _ = uniform(node, "v_threshold", name, shape)
        infinite = math.isinf(thr) and thr > 0
        if not infinite:
            if not thr > 0:
                raise NIRError(f"node {name!r}: v_threshold {thr:g} must be > 0 for edgesp's LIF")
            threshold = thr
        reset, _ = uniform(node, "v_reset", name, shape)
        if reset != 0 and not infinite:
            raise NIRError(
                f"node {name!r}: v_reset {reset:g} is not supported (edgesp resets v to 0): shift v_leak/v_threshold "
                "so that the reset potential is 0"
            )
    if not (math.isfinite(gain) and gain > 0):
        raise NIRError(f"node {name!r}: input gain {gain:g} (from r, w_in and the time constants) must be > 0")
    if abs(gain - 1.0) <= GAIN_TOL:
        gain = 1.0
    lif = LIF(du=du, dv=dv, threshold=threshold, reset="zero", bias=bias, spiking=spiking and not infinite)
    return Neuron(lif, gain, infinite)


def readout_to_nir(readout: str, dv_o: float, n: int, steps: int, dt: float, style: str) -> Any:
    """The head's readout as a NIR neuron on the head's (n,) output.

    membrane (o[t] = (1 − dv_o) o[t−1] + W s + b): ``style='lif'`` a LIF with v_threshold = +inf (never fires,
    so it is exactly a leaky integrator; loads in importers without LI, e.g. snnTorch 1.0), ``'li'`` a LI node
    (IF/I when dv_o = 0). spike_count (logits = W·mean_t s + b): an integrator I with R = 1/(T·dt), whose value
    after T steps is the logits."""
    import nir

    shape = (n,)
    if readout == "spike_count":
        return nir.I(r=_full(shape, 1.0 / (steps * dt)))
    lif = LIF(du=1.0, dv=dv_o, spiking=False)
    if style == "li":
        return lif_to_nir(lif, shape, dt, "readout")
    inf = _full(shape, math.inf)
    zero = _full(shape, 0.0)
    if dv_o == 0:
        return nir.IF(r=_full(shape, 1.0 / dt), v_threshold=inf, v_reset=zero)
    tau = _full(shape, dt / dv_o)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=zero, v_threshold=inf, v_reset=zero)
