"""A fifth family written as a user would: one file, registered by importing it (or installed as a
package with an entry point in the group ``tdecomp.families``, as ``tests/test_entry_points.py`` does).

It proves the family contract of :class:`tdecomp.FactorizedLayer` is enough on its own: the test
suite imports this module (``tests/helpers.py``) and every family-parametrized test then runs on it
too — oracles, budgets, allocation rules, the cost model, compile, training, the option schema.
``inner``, ``balancedness`` and ``singular_values`` come from the base class's reconstruct-based
defaults.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tdecomp.init import balance_norms
from tdecomp.layers import DenseSpec, FactorizedLayer, register_family
from tdecomp.layers.cost import Cost, Grid
from tdecomp.layers.energy import EnergyCurve
from tdecomp.layers.options import FamilyOption
from tdecomp.layers.tt import TTLayer

CLOSING_RANK = FamilyOption("closing_rank", int, 2, "size of the bond that closes the ring, carried in the "
                            "channels by the forward (1: a tensor train)", tuple(range(1, 9)))


def _modes(spec: DenseSpec) -> tuple[int, ...]:
    """The ring's modes in order, (c_in, *kernel modes > 1, c_out): the forward is a chain of convs."""
    return (spec.in_channels, *spec.factor_kernel, spec.out_channels)


def _truncated_svd(matrix: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """(U_r, Σ_r V_rᵀ) of ``matrix`` (m, n), zero-padded to ``rank`` columns/rows where it has fewer."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    k = min(rank, s.numel())
    left, right = matrix.new_zeros(matrix.shape[0], rank), matrix.new_zeros(rank, matrix.shape[1])
    left[:, :k], right[:k] = u[:, :k], s[:k, None] * vh[:k]
    return left, right


def _bonds(rank: Sequence[int], closing_rank: int) -> tuple[int, ...]:
    """Every bond around the ring: the closing one (last core → first), then the open ranks."""
    return (closing_rank, *rank, closing_rank)


@register_family("tensor_ring")
class TensorRingLayer(FactorizedLayer):
    """W[o, i, h, w] = tr(G₁[:, i, :] G₂[:, h, :] G₃[:, w, :] G₄[:, o, :]), core G_k (r_{k−1}, n_k, r_k)
    over the modes (c_in, *kernel modes, c_out) (a size-1 kernel axis gets no core, as in every
    family); r₀ = r_N is the closing bond, the option ``closing_rank`` (1 makes the ring a TT).

    Forward, a chain of small convs like TT's with the closing bond index a folded into the channels:
    a 1-tap conv c_in → (a, r₁) by G₁; per kernel mode a conv grouped by a, r_{k−1} → r_k (the k-tap
    kernel G_k, the same in every group); a 1-tap conv (a, r_{N−1}) → c_out by G_N, which closes the
    ring. ‖W‖²_F = tr(Π_k Σ_n G_k[:, n, :] ⊗ G_k[:, n, :]) with (r², r²) transfer matrices.

    Rank: the open bonds r₁ … r_{N−1} (``rank_names``), each at most its TT bound; an int gives all
    equal; a float is a parameter ratio reached by scaling each bond with its bound. Spectral init:
    TR-SVD (Zhao et al. 2016): the c_in unfolding's truncated SVD at rank a·r₁ gives G₁ (its rank
    index split into (a, r₁)) and a remainder carrying a to the last core, then TT-SVD steps; exact at
    full ranks, then balanced core norms. Energy curves: bond 1 the c_in unfolding's σ² summed in
    groups of a (what rank a·r₁ keeps), the others the sequential unfoldings' (TT-SVD's bounds).
    """

    options = (CLOSING_RANK,)

    @classmethod
    def rank_names(cls, spec: DenseSpec) -> tuple[str, ...]:
        names = ("c_in", *spec.mode_names, "c_out")
        return tuple(f"{a}|{b}" for a, b in zip(names, names[1:]))

    @classmethod
    def max_ranks(cls, spec: DenseSpec) -> tuple[int | None, ...]:
        return TTLayer.max_ranks(spec)  # the open bonds are bounded as a TT's over the same modes

    @classmethod
    def _ranks_at_scale(cls, spec: DenseSpec, scale: float, **options: Any) -> tuple[int, ...]:
        return TTLayer._ranks_at_scale(spec, scale)  # each bond at scale × its bound, as TT

    @classmethod
    def _ranks_from_int(cls, spec: DenseSpec, rank: int, **options: Any) -> tuple[int, ...]:
        return TTLayer._ranks_from_int(spec, rank)

    @classmethod
    def count_params(cls, spec: DenseSpec, rank: Sequence[int], closing_rank: int = CLOSING_RANK.default,
                     **options: Any) -> int:
        bonds = _bonds(rank, closing_rank)
        return sum(a * n * b for a, n, b in zip(bonds, _modes(spec), bonds[1:]))

    @classmethod
    def energy_curves(cls, spec: DenseSpec, weight: Tensor, closing_rank: int = CLOSING_RANK.default,
                      **options: Any) -> list[EnergyCurve | None]:
        chain = weight.reshape(spec.tensor_shape).movedim(0, -1)  # (c_in, *kernel, c_out)
        total = chain.square().sum()
        n = _modes(spec)
        gains = torch.linalg.svdvals(chain.reshape(n[0], -1)).square()
        gains = torch.cat([gains, gains.new_zeros(-len(gains) % closing_rank)]).reshape(-1, closing_rank).sum(1)
        rest = [EnergyCurve.of_unfolding(chain.reshape(math.prod(n[:k]), -1), total) for k in range(2, len(n))]
        return [EnergyCurve(gains, total), *rest]

    def _build(self, rank: tuple[int, ...], factory: dict[str, Any]) -> None:
        bonds = _bonds(rank, self.family_options[CLOSING_RANK.name])
        self.cores = nn.ParameterList(
            nn.Parameter(torch.empty(a, n, b, **factory)) for a, n, b in zip(bonds, _modes(self.spec), bonds[1:])
        )

    @property
    def rank(self) -> tuple[int, ...]:
        return tuple(core.shape[2] for core in self.cores[:-1])

    def factors(self) -> list[Tensor]:
        return list(self.cores)

    def reconstruct(self) -> Tensor:
        """The chain of steps (r₀·Π_{j<k} n_j, r_{k−1}) @ (r_{k−1}, n_k·r_k), then the trace over the closing bond."""
        first, *rest = self.cores
        out = first.reshape(-1, first.shape[2])
        for core in rest:
            out = (out @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[2])
        ring = out.reshape(first.shape[0], -1, first.shape[0]).diagonal(dim1=0, dim2=2).sum(-1)
        return ring.reshape(_modes(self.spec)).movedim(-1, 0).reshape(self.spec.weight_shape)

    def frobenius_sq(self) -> Tensor:
        transfer = None
        for core in self.cores:
            a, _, b = core.shape
            step = torch.einsum("anb,cnd->acbd", core, core).reshape(a * a, b * b)
            transfer = step if transfer is None else transfer @ step
        return transfer.trace()

    def _forward_factorized(self, x: Tensor, pad: tuple[int, ...]) -> Tensor:
        first, *kernel_cores, last = self.cores
        closing = first.shape[0]  # a, carried in the channels as (a, r_k), a major
        z = self._mix(x, first.permute(0, 2, 1).reshape(-1, first.shape[1]))
        for mode, core in enumerate(kernel_cores):  # the same (r_k, r_{k−1}, n_k) kernel for every a
            z = self._conv(z, core.permute(2, 0, 1).repeat(closing, 1, 1), (mode,), pad, groups=closing)
        return self._mix(z, last.permute(1, 2, 0).reshape(last.shape[1], -1))

    @torch.no_grad()
    def init_spectral(self, weight: Tensor) -> None:
        first, *middle, last = self.cores
        closing, n, r = first.shape
        chain = weight.to(first.dtype).reshape(self.spec.tensor_shape).movedim(0, -1)  # (c_in, *kernel, c_out)
        left, rest = _truncated_svd(chain.reshape(n, -1), closing * r)
        first.copy_(left.reshape(n, closing, r).permute(1, 0, 2))
        rest = rest.reshape(closing, r, -1).permute(1, 2, 0)  # (r₁, n₂ … n_N, a): a goes to the last core
        for core in middle:
            left, rest = _truncated_svd(rest.reshape(core.shape[0] * core.shape[1], -1), core.shape[2])
            core.copy_(left.reshape(core.shape))
        last.copy_(rest.reshape(last.shape))
        balance_norms(self.factors())

    def input_factor(self) -> tuple[Tensor, int]:
        """The first core (a, c_in, r₁): whitened SI whitens the c_in mode."""
        return self.cores[0], 1

    def _random_init_terms(self) -> int:
        return math.prod(core.shape[2] for core in self.cores)

    @classmethod
    def _factorized_cost(cls, spec: DenseSpec, rank: tuple[int, ...], grid: Grid,
                         closing_rank: int = CLOSING_RANK.default, **options: Any) -> Cost:
        """1-tap conv c_in → a·r₁ on the input grid; the conv over kernel mode j, a groups of
        r_j·n_j·r_{j+1} MACs per output, on the grid with modes ≤ j strided; 1-tap conv a·r_{N−1}
        → c_out on the output grid. Per call the grouped kernels are copied out a times."""
        bonds, n = _bonds(rank, closing_rank), _modes(spec)
        macs = grid.positions() * n[0] * closing_rank * bonds[1] + grid.out * closing_rank * bonds[-2] * n[-1]
        activations, fixed = grid.positions() * closing_rank * bonds[1], 0
        for j in range(len(n) - 2):
            kernel = bonds[j + 1] * n[j + 1] * bonds[j + 2]
            macs += grid.positions(range(j + 1)) * closing_rank * kernel
            activations += grid.positions(range(j + 1)) * closing_rank * bonds[j + 2]
            fixed += closing_rank * kernel
        return Cost(macs, activations, 0, fixed, 2 * (len(n) - 1))

    @classmethod
    def _reconstruct_macs(cls, spec: DenseSpec, rank: tuple[int, ...], closing_rank: int = CLOSING_RANK.default,
                          **options: Any) -> int:
        """Step k of the chain: (r₀·Π_{j<k} n_j, r_{k−1}) @ (r_{k−1}, n_k·r_k)."""
        bonds, n = _bonds(rank, closing_rank), _modes(spec)
        return sum(closing_rank * math.prod(n[:k]) * bonds[k] * n[k] * bonds[k + 1] for k in range(1, len(n)))
