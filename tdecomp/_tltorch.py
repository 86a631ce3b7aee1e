"""tensorly-torch import shim.

Importing ``tltorch`` calls ``tensorly.set_backend('pytorch')`` globally, which silently changes
the behaviour of any numpy tensorly code the user runs afterwards. We restore the user's backend
right after the import and request the pytorch backend only locally (:func:`pytorch_backend`)
around the tensorly decompositions we call. Our own reconstruction and forward code never goes
through tensorly's backend dispatch.
"""

from __future__ import annotations

import tensorly as tl

_user_backend = tl.get_backend()
import tltorch  # noqa: E402  (must follow the backend capture above)

tl.set_backend(_user_backend)

CPTensor = tltorch.CPTensor
TuckerTensor = tltorch.TuckerTensor
TTTensor = tltorch.TTTensor


def pytorch_backend():
    """Context manager running tensorly with the pytorch backend, restoring the previous one."""
    return tl.backend_context("pytorch")


__all__ = ["CPTensor", "TTTensor", "TuckerTensor", "pytorch_backend"]
