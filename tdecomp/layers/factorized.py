"""Anything whose weights are products of factors and can be Frobenius-decayed: factorized layers,
attention, the separable block."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn


class Factorized(nn.Module, ABC):
    """Anything whose weights are products of factors and can be Frobenius-decayed.

    :func:`tdecomp.frobenius_decay` and :func:`tdecomp.param_groups` recognise modules by this
    type, so new factorized modules (e.g. attention) join the regularizer without edits there.
    """

    @abstractmethod
    def frobenius_sq(self) -> Tensor:
        """Σ ‖W‖²_F over the module's reconstructed weights, from factor Gram identities."""

    def factor_parameters(self) -> list[nn.Parameter]:
        """The parameters that are factors (everything except biases)."""
        return [p for name, p in self.named_parameters() if not name.endswith("bias")]

    def balancing_scales(self) -> list[tuple[nn.Parameter, Tensor]]:
        """``(parameter, scale)`` pairs whose products ``parameter * scale`` leave the module's
        function unchanged and balance its factor norms; :func:`tdecomp.rebalance` applies them.

        Frobenius decay penalizes only the products, so it is blind to rescalings between factors
        (T_j·c, T_k/c); with more than two factors discrete SGD drifts along them until one factor
        is tiny, its gradient (∝ 1/‖T_k‖) huge and a step overshoots to NaN. Default: none.
        """
        return []

    @property
    def num_params(self) -> int:
        """Number of parameters the module holds (factors and bias)."""
        return sum(p.numel() for p in self.parameters())
