"""Bad input fails loudly, naming the argument; a fifth family plugs in through the registry."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import tdecomp
from tdecomp.layers import registry
from tests.helpers import FAMILIES


@pytest.mark.parametrize("family", ["svd", "Tucker", "", "tr"])
def test_unknown_family(family):
    with pytest.raises(ValueError, match=r"family=.*expected one of: 'cp', 'lowrank', ('tensor_ring', )?'tt', 'tuck"):
        tdecomp.factorize(nn.Linear(4, 4), family, 2)


@pytest.mark.parametrize("rank", [0, -3, 0.0, -0.5, math.nan, math.inf])
@pytest.mark.parametrize("family", FAMILIES)
def test_non_positive_rank(family, rank):
    with pytest.raises(ValueError, match="rank must be a positive"):
        tdecomp.factorize(nn.Conv2d(4, 4, 3), family, rank)


@pytest.mark.parametrize("family,rank,length", [
    ("tucker", (2, 2), 4), ("tt", (2, 2), 3), ("lowrank", (2, 2), 1), ("cp", (), 1),
])
def test_rank_tuple_of_wrong_length_names_the_expected_entries(family, rank, length):
    with pytest.raises(ValueError, match=rf"rank for family '{family}'.* {length} entries"):
        tdecomp.factorize(nn.Conv2d(4, 4, 3), family, rank)


@pytest.mark.parametrize("rank", [(2, 0, 3, 3), (2, 2.5, 3, 3), True, "4"])
def test_bad_rank_entries_and_types(rank):
    with pytest.raises((ValueError, TypeError), match="rank"):
        tdecomp.factorize(nn.Conv2d(4, 4, 3), "tucker", rank)


@pytest.mark.parametrize("module", [nn.ConvTranspose2d(3, 3, 3), nn.LSTM(3, 3), nn.Bilinear(2, 2, 3)])
def test_unsupported_module(module):
    with pytest.raises(TypeError, match=r"must be nn.Linear, nn.Conv1d/Conv2d/Conv3d or transformers' Conv1D, got"):
        tdecomp.factorize(module, "lowrank", 2)


def test_grouped_conv_is_not_implemented_and_says_groups():
    with pytest.raises(NotImplementedError, match="groups=2"):
        tdecomp.factorize(nn.Conv2d(4, 4, 3, groups=2), "cp", 2)


def test_bad_init_and_implementation():
    with pytest.raises(ValueError, match=r"init='svd'.*'spectral', 'random'"):
        tdecomp.factorize(nn.Linear(4, 4), "cp", 2, init="svd")
    with pytest.raises(ValueError, match=r"implementation='fast'.*'factorized', 'reconstructed'"):
        tdecomp.factorize(nn.Linear(4, 4), "cp", 2, implementation="fast")


def test_model_without_eligible_layers():
    with pytest.raises(ValueError, match="no eligible"):
        tdecomp.factorize_model(nn.Sequential(nn.ReLU()), "cp", 0.5)


def test_tdecomp_calls_leave_the_users_tensorly_backend_alone():
    code = ("import tdecomp, tensorly as tl; tl.set_backend('numpy'); "
            "tdecomp.factorize(__import__('torch').nn.Conv2d(4, 4, 3), 'tucker', 2); "
            "print(tl.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"


@pytest.mark.parametrize("imports", ["import tdecomp, tltorch", "import tltorch, tdecomp"])
def test_tltorch_layers_work_next_to_tdecomp_in_either_import_order(imports):
    code = (f"import tensorly; {imports}; import torch; conv = torch.nn.Conv2d(4, 6, 3); "
            "x = torch.randn(2, 4, 8, 8); "
            "theirs = tltorch.FactorizedConv.from_conv(conv, rank=0.5, factorization='cp')(x); "
            "ours = tdecomp.factorize(conv, 'tucker', 0.5)(x); print(tuple(theirs.shape), tuple(ours.shape))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "(2, 6, 6, 6) (2, 6, 6, 6)"


class _DenseFamily(tdecomp.FactorizedLayer):
    """A trivial "family": W is its own single factor. Exercises the whole base contract."""

    @classmethod
    def rank_names(cls, spec):
        return ()

    @classmethod
    def max_ranks(cls, spec):
        return ()

    @classmethod
    def _ranks_at_scale(cls, spec, scale, **options):
        return ()

    @classmethod
    def _ranks_from_int(cls, spec, rank, **options):
        return ()

    @classmethod
    def count_params(cls, spec, rank):
        return spec.weight_numel

    def _build(self, rank, factory):
        self.W = nn.Parameter(torch.empty(self.spec.weight_shape, **factory))

    @property
    def rank(self):
        return ()

    def factors(self):
        return [self.W]

    def reconstruct(self):
        return self.W

    def frobenius_sq(self):
        return self.W.pow(2).sum()

    def _forward_factorized(self, x, pad):
        if not self.spec.is_conv:
            return self._mix(x, self.W)
        return self._conv(x, self.W.reshape(self.spec.tensor_shape), range(len(self.spec.factor_axes)), pad)

    def init_spectral(self, weight):
        with torch.no_grad():
            self.W.copy_(weight)

    def _random_init_terms(self):
        return 1


def test_a_fifth_family_is_one_class_and_one_registration(monkeypatch):
    monkeypatch.setattr(registry.FAMILIES, "_entries", dict(registry.FAMILIES._entries))
    registry.register_family("dense_test")(_DenseFamily)
    assert "dense_test" in tdecomp.available_families()
    conv = nn.Conv2d(3, 5, 3, stride=2, padding="valid").double()
    layer = tdecomp.factorize(conv, "dense_test", 2)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert torch.allclose(layer(x), conv(x))
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    tdecomp.factorize_model(model, "dense_test", 1, skip=(), progress=False)
    assert tdecomp.frobenius_decay(model) > 0
    with pytest.raises(ValueError, match="already registered"):
        registry.register_family("dense_test")(_DenseFamily)


@pytest.mark.parametrize("call", [
    lambda: tdecomp.factorize(nn.MultiheadAttention(8, 2), "cp", 2),
    lambda: tdecomp.FactorizedMultiheadAttention(8, 2, 2, family="tensor_ring"),
    lambda: tdecomp.factorize_model(nn.Sequential(nn.MultiheadAttention(8, 2)), "tt", 0.5, skip=(),
                                    targets=("attention",), progress=False),
])
def test_attention_with_a_family_without_heads_says_attention_is_why(call):
    """Issue 21 item 9: one line naming the families that define attention heads."""
    import tests.tensor_ring  # noqa: F401  (a registered family without heads)

    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and message.endswith(
        "expected one of: 'lowrank', 'tucker' (factorized attention supports only the families that define "
        "attention heads)")


def test_the_families_served_by_the_separable_block_come_from_the_registry(monkeypatch):
    """A family that sets a ``separable`` carrier is served by the block and accepted everywhere."""
    from tdecomp.config import TrainConfig
    from tdecomp.layers.separable import separable_families

    assert separable_families() == ("tt", "tucker")
    monkeypatch.setattr(registry.FAMILIES, "_entries", dict(registry.FAMILIES._entries))

    @registry.register_family("tucker_again")
    class TuckerAgain(tdecomp.TuckerLayer):
        pass

    assert separable_families() == ("tt", "tucker", "tucker_again")
    conv = nn.Conv2d(8, 16, 3, padding=1)
    ours, theirs = (tdecomp.factorize(conv, f, tdecomp.RankScale(0.5), separable=True, init="random")
                    for f in ("tucker_again", "tucker"))
    assert ours.rank == theirs.rank and ours.pointwise.__class__ is TuckerAgain
    assert TrainConfig(family="tucker_again", separable=True).separable
    for reject in (lambda: tdecomp.factorize(conv, "cp", 0.5, separable=True),
                   lambda: TrainConfig(family="cp", separable=True)):
        with pytest.raises(ValueError, match="takes family 'tt' or 'tucker' or 'tucker_again', got|"
                                             "takes family tt or tucker or tucker_again, got"):
            reject()
