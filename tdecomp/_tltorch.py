"""tensorly-torch import shim.

Importing ``tltorch`` selects tensorly's pytorch backend globally, and tltorch's layers rely on it
when they are built and run. We keep that: restoring the user's earlier backend would break every
tltorch layer built later in the same program (``import tdecomp`` then ``tltorch.FactorizedConv``).
Our own decompositions request the pytorch backend only locally (:func:`pytorch_backend`), and our
reconstruction and forward code never goes through tensorly's dispatch, so tdecomp works under
whatever backend the user selects afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import tensorly as tl
import tltorch

CPTensor = tltorch.CPTensor
TuckerTensor = tltorch.TuckerTensor
TTTensor = tltorch.TTTensor


class TltorchFormat(NamedTuple):
    """A family's counterpart in tensorly-torch, for the benchmarks that compare the two: tltorch's
    ``factorization`` name, our explicit ranks in tltorch's ``rank`` convention, and the
    ``FactorizedConv.from_conv`` options that make its float rank split a budget as the family does
    (a function of the dense ``spec`` and the family's options)."""

    factorization: str
    rank: Callable[[tuple[int, ...]], object]
    from_conv_options: Callable[..., dict[str, Any]] = lambda spec, **options: {}


def pytorch_backend():
    """Context manager running tensorly with the pytorch backend, restoring the previous one."""
    return tl.backend_context("pytorch")


__all__ = ["CPTensor", "TTTensor", "TltorchFormat", "TuckerTensor", "pytorch_backend"]
