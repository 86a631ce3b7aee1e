"""A factorized embedding table E = U Vᵀ, as the fairseq fork of Khodak et al. (2021) factorizes
token and position embeddings (microsoft/fnl_paper Transformer-PyTorch/singleprocess_train.py:30-47)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_choice
from ..init import FACTOR_INITS, LAYER_INIT_METHODS
from .lowrank import LowRankLayer
from .ranks import Rank
from .spec import DenseSpec
from .spectral import spectral_init


class FactorizedEmbedding(LowRankLayer):
    """``nn.Embedding`` whose (num_embeddings, embedding_dim) table is E = U Vᵀ, U (N, r), V (d, r).

    ``forward(ids (*,)) → (*, d)`` = U[ids] Vᵀ: a lookup of r-dim rows, then one r → d product, as
    the official layer (``F.linear(embedding(x), VT.T)``, singleprocess_train.py:45-47). With
    ``padding_idx`` the padding row of U gets no gradient, as in ``nn.Embedding`` (V still does).

    A low-rank layer of the table read as a bias-free Linear d → N (:meth:`table_spec`), so ranks
    (a :class:`RankScale` s gives r = round(s·min(N, d)), frob.py:101), SI (balanced truncated
    SVD), ‖E‖²_F for FD and :meth:`reconstruct` are the low-rank family's. Only the 2-factor form
    (r ≤ min(N, d)); :meth:`to_dense` gives back an ``nn.Embedding``. Drop-in as ``nn.Embedding``:
    ``num_embeddings``, ``embedding_dim``, ``padding_idx`` and a (N, d) placeholder ``weight``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: Rank, padding_idx: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **options: Any) -> None:
        spec = self.table_spec(num_embeddings, embedding_dim)
        self.check_options(options)
        ranks = self.resolve_rank(spec, rank, **options)
        if ranks[0] > min(num_embeddings, embedding_dim):
            raise ValueError(f"rank {ranks[0]} exceeds min(num_embeddings, embedding_dim)="
                             f"{min(num_embeddings, embedding_dim)}; a factorized embedding has no overcomplete form")
        super().__init__(spec, ranks, device=device, dtype=dtype)
        self.padding_idx = padding_idx

    def _dense_attributes(self) -> frozenset[str]:
        """An ``nn.Embedding`` has neither a Linear's nor a conv's attributes; its own are below."""
        return frozenset()

    @property
    def num_embeddings(self) -> int:
        return self.spec.out_channels

    @property
    def embedding_dim(self) -> int:
        return self.spec.in_channels

    @staticmethod
    def table_spec(num_embeddings: int, embedding_dim: int) -> DenseSpec:
        """The table (N, d) as the weight of a bias-free Linear d → N."""
        return DenseSpec(num_embeddings, embedding_dim, has_bias=False)

    @classmethod
    def from_dense(cls, module: nn.Embedding, rank: Rank, init: str = "spectral",
                   **options: Any) -> FactorizedEmbedding:
        """Factorize ``module``: ``"spectral"`` = balanced truncated SVD of its table (frob.py:66-70,106-108);
        ``"random"``: balanced Gaussian factors at the table's entry std; ``"fairseq-factors"``: each
        factor N(0, 0.1), the fork's embedding init per factor (singleprocess_train.py:61,
        transformer.py:529); the other per-factor draws as :meth:`LowRankLayer.init_factors`."""
        check_choice("init", init, LAYER_INIT_METHODS)
        if module.max_norm is not None or module.scale_grad_by_freq or module.sparse:
            raise ValueError("FactorizedEmbedding supports plain lookups only: max_norm, "
                             "scale_grad_by_freq and sparse must be off")
        weight = module.weight.detach()
        layer = cls(module.num_embeddings, module.embedding_dim, rank, module.padding_idx,
                    device=weight.device, dtype=weight.dtype, **options)
        with torch.no_grad():
            if init == "spectral":
                spectral_init(layer, weight)
            elif init == "fairseq-factors":
                layer.U.normal_(0.0, 0.1)
                layer.V.normal_(0.0, 0.1)
            elif init in FACTOR_INITS:
                layer.init_factors(init)
            else:
                layer.init_random(layer.spec.default_std if weight.is_meta else float(weight.std()))
        return layer

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.U, self.padding_idx) @ self.V.T

    def macs(self, input_shape: Sequence[int], implementation: str | None = None) -> int:
        """r·d per looked-up id (U[ids] (…, r) @ Vᵀ; the lookup itself multiplies nothing)."""
        return math.prod(input_shape) * self.rank[0] * self.spec.in_channels

    @torch.no_grad()
    def to_dense(self) -> nn.Embedding:
        """An ``nn.Embedding`` with table U Vᵀ: the same lookups."""
        dense = nn.Embedding(*self.spec.matrix_shape, padding_idx=self.padding_idx, device=self.U.device,
                             dtype=self.U.dtype)
        dense.weight.copy_(self.reconstruct())
        return dense.train(self.training)

    def extra_repr(self) -> str:
        n, d = self.spec.matrix_shape
        return f"family={self.family}, embedding({n}, {d}), rank={self.rank}, padding_idx={self.padding_idx}"
