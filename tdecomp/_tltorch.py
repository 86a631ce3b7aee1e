"""tensorly-torch import shim.

Importing ``tltorch`` selects tensorly's pytorch backend globally, and tltorch's layers rely on it
when they are built and run. We keep that: restoring the user's earlier backend would break every
tltorch layer built later in the same program (``import tdecomp`` then ``tltorch.FactorizedConv``).
Our own decompositions request the pytorch backend only locally (:func:`pytorch_backend`), and our
reconstruction and forward code never goes through tensorly's dispatch, so tdecomp works under
whatever backend the user selects afterwards.
"""

from __future__ import annotations

import tensorly as tl
import tltorch

CPTensor = tltorch.CPTensor
TuckerTensor = tltorch.TuckerTensor
TTTensor = tltorch.TTTensor


def pytorch_backend():
    """Context manager running tensorly with the pytorch backend, restoring the previous one."""
    return tl.backend_context("pytorch")


__all__ = ["CPTensor", "TTTensor", "TuckerTensor", "pytorch_backend"]
