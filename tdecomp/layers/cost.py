"""The shape cost model of a factorized layer's forward: what ``implementation="auto"`` compares and
what the benchmarks' FLOP columns report.

Each family counts its own stages (``_factorized_cost``, ``_reconstruct_macs``, functions of the
dense geometry, the ranks and the family options); this module holds
the units (:class:`Cost`), the spatial positions each stage sees (:class:`Grid`, :func:`conv_grid`)
and the rule that compares the two implementations (:func:`auto_choice`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .spec import DenseSpec

if TYPE_CHECKING:
    from .base import FactorizedLayer

# Cost model of ``implementation="auto"``, in multiply-accumulate (MAC) equivalents: an activation
# element stored for backward costs a write now and reads in backward (memory-bound, ~MEMORY_COST
# MACs); a separate op costs dispatch, allocation and a layout reorder in oneDNN/cuDNN (~OP_COST
# MACs). Calibrated on CPU with ``tdecomp bench --suite layers``; they only matter near the
# break-even point.
MEMORY_COST = 4
OP_COST = 1 << 16


class Cost(NamedTuple):
    """Forward cost of one implementation of a layer, for the ``"auto"`` choice and benchmarks.

    Per sample (an image for a conv, a row for a Linear): ``macs`` and stored ``activations``
    (elements kept for backward). Per call: ``fixed_macs`` and ``fixed_memory`` (elements) of
    building per-call weights (e.g. W itself), and the number of ``ops``.
    """

    macs: int
    activations: int
    fixed_macs: int
    fixed_memory: int
    ops: int

    def total_macs(self, batch: int) -> int:
        """Multiply-accumulates of one forward on ``batch`` samples: N·macs + fixed_macs."""
        return batch * self.macs + self.fixed_macs

    def total(self, batch: int) -> int:
        """MAC equivalents N·(macs + κ_m·act) + fixed_macs + κ_m·fixed_memory + κ_op·ops."""
        memory = batch * self.activations + self.fixed_memory
        return self.total_macs(batch) + MEMORY_COST * memory + OP_COST * self.ops


class Grid(NamedTuple):
    """Spatial positions per sample that the stages of a forward see; all 1 for a Linear layer.

    ``inputs`` and ``outputs`` are the sizes along the factor modes (:attr:`DenseSpec.factor_axes`)
    of the input (including padding :meth:`DenseSpec.pad_input` applies up front) and of the dense
    output; ``base`` is the number of positions along the size-1 kernel axes (their output sizes:
    their stride is applied up front).
    """

    inputs: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()
    base: int = 1

    def positions(self, done: Collection[int] = ()) -> int:
        """Positions once the factor modes ``done`` (indices) are convolved: base·Π_{j∈done} out_j·Π_{j∉done} in_j."""
        positions = self.base  # a plain loop: torch.compile traces it (math.prod of a generator breaks the graph)
        for j, (i, o) in enumerate(zip(self.inputs, self.outputs)):
            positions *= o if j in done else i
        return positions

    @property
    def out(self) -> int:
        """Output positions: base·Π_j out_j."""
        return self.base * math.prod(self.outputs)


def conv_grid(spec: DenseSpec, spatial: Sequence[int]) -> Grid:
    """The :class:`Grid` of a conv on an input of spatial size ``spatial``; ``Grid()`` for a Linear.

    Along each axis, out = ⌊(in + pad_before + pad_after − d(k − 1) − 1) / s⌋ + 1 (the dense output).
    """
    if not spec.is_conv:
        return Grid()
    inputs, outputs, base = [], [], 1
    up_front = spec.pads_up_front
    for size, k, s, d, (before, after) in zip(spatial, spec.kernel_size, spec.stride, spec.dilation, spec.pads):
        out = (size + before + after - d * (k - 1) - 1) // s + 1
        if k == 1:
            base *= out
            continue
        inputs.append(size + before + after if up_front else size)
        outputs.append(out)
    return Grid(tuple(inputs), tuple(outputs), base)


def batch_and_grid(spec: DenseSpec, input_shape: Sequence[int]) -> tuple[int, Grid]:
    """Samples N (all leading dims; an unbatched conv input is one) and :func:`conv_grid` of an input."""
    n = spec.n_spatial
    return math.prod(input_shape[: -1 - n]), conv_grid(spec, input_shape[len(input_shape) - n :])


def reconstructed_cost(
    cls: type[FactorizedLayer], spec: DenseSpec, rank: tuple[int, ...], grid: Grid, options: Mapping[str, Any]
) -> Cost:
    """Build W once per call (``fixed_macs``; W is the ``fixed_memory``), then the dense op."""
    macs = grid.out * spec.weight_numel
    return Cost(macs, 0, cls._reconstruct_macs(spec, rank, **options), spec.weight_numel, 2)


def auto_choice(
    cls: type[FactorizedLayer], spec: DenseSpec, rank: tuple[int, ...], batch: int, grid: Grid,
    options: Mapping[str, Any],
) -> str:
    """``"factorized"`` or ``"reconstructed"``, whichever forward :class:`Cost` is lower (ties: factorized).

    The backward pass costs ≈ 2× the forward in both, so the choice holds for fwd+bwd:

        factorized:    N·(Σ_stages MACs + κ_m·Σ_stages stored activations) + per-call kernel
                       building (e.g. Tucker's G ×₃ U_h ×₄ U_w) + κ_op·#ops
        reconstructed: N·P_out·numel(W) + MACs(reconstruct) + κ_m·numel(W) + 2κ_op

    N = samples (batch × any extra leading dims), P_out = output positions per sample,
    κ_m = :data:`MEMORY_COST`, κ_op = :data:`OP_COST`; each family's ``_factorized_cost`` counts
    its stages on the grids they see (strides included, :class:`Grid`). Factorized wins for
    ratios < 1 on all but tiny N·P_out; reconstructed wins for e.g. overcomplete low-rank layers
    or batch-1 inference on small feature maps. A pure function of shapes (never of weight
    values, which change every step; the family ``options``, e.g. low rank's ``overcomplete``, shape
    the stages); plain Python, so ``torch.compile`` traces it to a constant. A family without a cost
    model always runs ``"factorized"``.
    """
    try:
        factorized = cls._factorized_cost(spec, rank, grid, **options).total(batch)
        reconstructed = reconstructed_cost(cls, spec, rank, grid, options).total(batch)
    except NotImplementedError:
        return "factorized"
    return "factorized" if factorized <= reconstructed else "reconstructed"
