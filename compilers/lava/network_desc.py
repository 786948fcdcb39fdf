"""The compiled network description (what ``compile_model`` writes and the simulators read back).

``network.npz`` holds the arrays (no pickles): ``layer{i}.weight``/``layer{i}.bias`` (float32 for floating_pt;
int32 even mantissas for fixed_pt), for a recurrent block ``layer{i}.rec_weight`` (H, H) (same formats, its own
exponent ``rec_exp``) and ``signal.table`` (C, D): the SP target signal of every class,
z_c = act(LayerNorm(W_S e_c + b_S)). Placement ``'hidden'`` (the spec's default): D = H_0, block 0's width; z_c
is the current a^t_0 injected into block 0's target compartments every step (float32; fixed_pt: int32 in
block 0's current units, SIGMA fractional bits). Placement ``'input'`` (legacy checkpoints): D = the input
size; z_c is the target stream's input t_0 (float32; fixed_pt: int32 with INPUT_FRAC fractional bits).
the manifest's ``backend['network']`` holds the scalars: per layer kind ('lif' | 'readout'), sizes, decays, threshold,
reset, weight exponent; the precision, encoding, T, loss, temperature, learning rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesp.errors import CompileError


@dataclass
class LayerDesc:
    kind: str  # 'lif' (hidden SP block) | 'readout' (output head; dv = readout decay)
    n_in: int
    n_out: int
    weight: np.ndarray  # (n_out, n_in)
    bias: np.ndarray  # (n_out,)
    du: float = 1.0
    dv: float = 0.0
    threshold: float = 1.0
    reset: str = "zero"
    lif_bias: float = 0.0
    spiking: bool = True
    readout: str = "membrane"  # head only: 'membrane' (leaky integrator with dv) | 'spike_count'
    weight_exp: int = 0  # fixed_pt only
    du_int: int = 0  # fixed_pt only (Lava LIF 'du' register)
    dv_int: int = 0
    vth_int: int = 0
    lif_bias_int: int = 0  # in v units (already MSB-aligned)
    cores: list[int] = field(default_factory=list)
    # recurrent block (spec LIF recurrent=True): a[t] += W_rec s[t−1] from the block's own spikes, one step delay
    recurrent: bool = False
    rec_weight: np.ndarray | None = None  # (n_out, n_out); float32, or fixed_pt int32 even mantissas
    rec_exp: int = 0  # fixed_pt only: W_rec ≈ W_rec_int·2^rec_exp / S (its own synapse group's exponent)


@dataclass
class NetDesc:
    precision: str  # 'floating_pt' | 'fixed_pt'
    time_steps: int
    encoding: str  # 'direct' | 'rate' | 'sequence'
    encoding_seed: int
    loss: str  # 'v1' | 'l2'
    temperature: float
    lr: float
    lr_head: float
    num_classes: int
    input_dim: int  # size of one step of the sample input (block 0's n_in)
    table: np.ndarray  # (C, D): D = H_0 (hidden placement) or input_dim (input placement)
    layers: list[LayerDesc]
    placement: str = "input"  # 'hidden' | 'input'; builds written before placement existed are 'input'
    signal_learn: bool = False  # hidden placement: W_S, b_S learn (on the embedded CPU) from block 0's δ
    signal_act: str = "relu"  # 'relu' | 'none'
    signal_weight: np.ndarray | None = None  # (H_0, C) float64 W_S, only when signal_learn
    signal_bias: np.ndarray | None = None  # (H_0,) float64 b_S, only when signal_learn

    @property
    def hidden(self) -> bool:
        """The target enters block 0's compartments as a current (not the input)."""
        return self.placement == "hidden"

    @property
    def in_rows(self) -> int:
        """Rows of the source's messages: the sample only (hidden placement) or sample + target rows."""
        return 1 if self.hidden else self.rows

    @property
    def rows(self) -> int:
        """1 sample row + K target rows."""
        return 1 + (self.num_classes if self.loss == "v1" else 1)

    @property
    def depth(self) -> int:
        return sum(la.kind == "lif" for la in self.layers)

    @property
    def fixed(self) -> bool:
        return self.precision == "fixed_pt"

    def scalars(self) -> dict[str, Any]:
        out = {
            k: getattr(self, k)
            for k in (
                "precision",
                "time_steps",
                "encoding",
                "encoding_seed",
                "loss",
                "temperature",
                "lr",
                "lr_head",
                "num_classes",
                "input_dim",
                "placement",
                "signal_learn",
                "signal_act",
            )
        }
        out["layers"] = [
            {k: v for k, v in la.__dict__.items() if k not in ("weight", "bias", "rec_weight")} for la in self.layers
        ]
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"signal.table": self.table}
        if self.signal_weight is not None:
            out["signal.weight"] = self.signal_weight
            out["signal.bias"] = self.signal_bias
        for i, la in enumerate(self.layers):
            out[f"layer{i}.weight"] = la.weight
            out[f"layer{i}.bias"] = la.bias
            if la.rec_weight is not None:
                out[f"layer{i}.rec_weight"] = la.rec_weight
        return out

    def copy(self) -> NetDesc:
        layers = [
            LayerDesc(
                **{
                    **la.__dict__,
                    "weight": la.weight.copy(),
                    "bias": la.bias.copy(),
                    "rec_weight": None if la.rec_weight is None else la.rec_weight.copy(),
                    "cores": list(la.cores),
                }
            )
            for la in self.layers
        ]
        extra = {
            k: None if getattr(self, k) is None else getattr(self, k).copy() for k in ("signal_weight", "signal_bias")
        }
        return NetDesc(**{**self.__dict__, "table": self.table.copy(), "layers": layers, **extra})


def load_netdesc(build_dir: str | Path, manifest: Any) -> NetDesc:
    """The network of a (verified) Lava build: ``manifest`` is its :class:`edgesp.manifest.Manifest`."""
    build_dir = Path(build_dir)
    network = manifest.backend.get("network")
    if not isinstance(network, dict) or "layers" not in network:
        raise CompileError(
            f"{build_dir}/manifest.json has no backend 'network' section: re-run 'edgesp compile' with a lava target"
        )
    path = build_dir / manifest.artifacts["inference"]
    if not path.exists():
        raise CompileError(f"{path} is missing: re-run 'edgesp compile'")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise CompileError(f"{path} is corrupt ({type(e).__name__}): re-run 'edgesp compile'") from None
    sc = dict(network)
    layers = []
    for i, ld in enumerate(sc.pop("layers")):
        try:
            rec = arrays[f"layer{i}.rec_weight"] if ld.get("recurrent") else None
            layers.append(
                LayerDesc(**ld, weight=arrays[f"layer{i}.weight"], bias=arrays[f"layer{i}.bias"], rec_weight=rec)
            )
        except KeyError as e:
            raise CompileError(f"{path} lacks {e.args[0]!r}: re-run 'edgesp compile'") from None
    if sc.get("signal_learn") and "signal.weight" not in arrays:
        raise CompileError(f"{path} lacks 'signal.weight' (learned signal): re-run 'edgesp compile'")
    return NetDesc(
        **sc,
        table=arrays["signal.table"],
        layers=layers,
        signal_weight=arrays.get("signal.weight"),
        signal_bias=arrays.get("signal.bias"),
    )
