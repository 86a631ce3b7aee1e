"""Cheaper spectral initialization for large layers: randomized SVD, shortened sweeps, solver choice.

Oracles: ``torch.linalg.svd`` (Eckart–Young optimal truncation), tensorly's ``tucker`` (HOOI) and
``tensor_train``, and the full-schedule exact decompositions.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tdecomp
from tdecomp import _decompositions as dec
from tdecomp._svd import OVERSAMPLING, RANDOMIZED_SVD_MIN_DIM, is_large, randomized_svd, si_solver, truncated_svd
from tdecomp._tltorch import pytorch_backend
from tdecomp.config import TrainConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """LAPACK's multi-threaded SVDs stall on a loaded shared CPU (a 96×96×3×3 HOOI: 1 s on one
    thread, 49 s on two at load 8); these matrices are too small to gain from threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _matrix_with_spectrum(m: int, n: int, s: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """U diag(s) Vᵀ with Haar-random orthonormal U (m, k), V (n, k), float64."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(m, s.numel(), generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, s.numel(), generator=g, dtype=torch.float64)).Q
    return (u * s) @ v.T


def _truncation_error(a: torch.Tensor, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor) -> float:
    return float((a - (u * s) @ vh).norm())


def _optimal_error(a: torch.Tensor, r: int) -> float:
    """Eckart–Young: ‖A − A_r‖_F = √(Σ_{i>r} σ_i²) from torch.linalg.svdvals."""
    return float(torch.linalg.svdvals(a)[r:].square().sum().sqrt())


def test_randomized_svd_is_exact_on_an_exactly_low_rank_matrix():
    a = _matrix_with_spectrum(300, 200, torch.linspace(5, 1, 8, dtype=torch.float64))
    u, s, vh = randomized_svd(a, 8)
    torch.testing.assert_close((u * s) @ vh, a, atol=1e-10, rtol=0)
    torch.testing.assert_close(s, torch.linalg.svdvals(a)[:8], atol=1e-10, rtol=0)
    torch.testing.assert_close(u.T @ u, torch.eye(8, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("decay", ["geometric", "power"])
def test_randomized_svd_error_is_within_a_small_factor_of_the_optimum(decay):
    """Halko et al. (2011) Thm 10.7/10.8: with p = 10 and q = 2 power iterations the error is a small
    multiple of Eckart–Young's on decaying spectra (≤ 1.5× here, measured ≤ 1.05×)."""
    i = torch.arange(1, 201, dtype=torch.float64)
    s = 0.97**i if decay == "geometric" else i**-0.5
    a, r = _matrix_with_spectrum(600, 400, s), 20
    u, s_r, vh = randomized_svd(a, r)
    assert u.shape == (600, r) and s_r.shape == (r,) and vh.shape == (r, 400)
    assert _truncation_error(a, u, s_r, vh) <= 1.05 * _optimal_error(a, r)
    # the sketch's singular values never exceed the true ones (QᵀA is a compression of A)
    assert bool((s_r <= torch.linalg.svdvals(a)[:r] + 1e-12).all())


def test_randomized_svd_is_batched_deterministic_and_leaves_the_global_rng_alone():
    spectrum = torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5], dtype=torch.float64)
    a = torch.stack([_matrix_with_spectrum(120, 90, spectrum, seed=k) for k in range(3)])
    state = torch.get_rng_state()
    u, s, vh = randomized_svd(a, 5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close((u * s[:, None]) @ vh, a, atol=1e-10, rtol=0)
    torch.testing.assert_close(s, spectrum.expand(3, 5), atol=1e-10, rtol=0)
    noisy = a + torch.randn_like(a)
    assert torch.equal(randomized_svd(noisy, 5)[0], randomized_svd(noisy, 5)[0])


def test_auto_keeps_small_matrices_exact_and_sketches_large_low_rank_ones():
    small = torch.randn(192, 192)  # a ResNet-32 64→64 3×3 matricization
    assert not is_large(192, 192, 8)
    u, s, vh = truncated_svd(small, 8)
    p, t, qh = torch.linalg.svd(small, full_matrices=False)
    assert torch.equal(s, t[:8]) and torch.equal(u, p[:, :8]) and torch.equal(vh, qh[:8])
    big = RANDOMIZED_SVD_MIN_DIM
    assert is_large(big, 3 * big, 40)
    assert not is_large(big, 3 * big, big // 2 - OVERSAMPLING + 1)  # sketch wider than half: exact
    with si_solver("exact"):
        assert not is_large(big, 3 * big, 40)
    with si_solver("randomized"):
        assert is_large(64, 64, 8) and not is_large(64, 64, 60)
    assert is_large(big, 3 * big, 40)  # the context was restored


def test_si_solver_rejects_an_unknown_name():
    with pytest.raises(ValueError, match=r"si_solver='fast'.*'auto', 'exact', 'randomized'"):
        with si_solver("fast"):
            pass
    with pytest.raises(ValueError, match="si_solver='fast'"):
        TrainConfig(si_solver="fast")


def _tucker_tensor(shape, ranks, seed=0):
    """A core of decaying entries in orthonormal bases plus small noise: a well-separated Tucker rank."""
    g = torch.Generator().manual_seed(seed)
    core = torch.randn(*ranks, generator=g, dtype=torch.float64)
    for k, r in enumerate(ranks):
        core = core * (0.7 ** torch.arange(r, dtype=torch.float64)).reshape(*(1,) * k, r, *(1,) * (len(ranks) - k - 1))
    x = core
    for k, (n, r) in enumerate(zip(shape, ranks)):
        u = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64)).Q
        x = torch.tensordot(x, u, dims=([k], [1])).movedim(-1, k)
    return x + 0.01 * x.norm() / x.numel() ** 0.5 * torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("ranks", [(4, 3, 3, 3), (6, 5, 2, 3), (8, 8, 3, 3)])
def test_hooi_equals_tensorly_tucker(ranks):
    from tensorly.decomposition import tucker

    x = _tucker_tensor((12, 10, 3, 3), (8, 8, 3, 3))
    core, factors = dec.tucker_hooi(x, ranks)
    with pytorch_backend():
        ref_core, ref_factors = tucker(x, rank=list(ranks), init="svd", n_iter_max=10, tol=1e-7)
    torch.testing.assert_close(core, ref_core, atol=1e-8, rtol=1e-6)
    for f, ref in zip(factors, ref_factors):  # same signs: tensorly's svd_flip convention
        torch.testing.assert_close(f, ref, atol=1e-8, rtol=1e-6)


def _tucker_error(x, core, factors):
    rec = core
    for k, u in enumerate(factors):
        rec = torch.tensordot(rec, u, dims=([k], [1])).movedim(-1, k)
    return float((x - rec).norm() / x.norm())


def test_large_tucker_schedule_stays_close_to_full_convergence():
    """Randomized SVDs + the short HOOI schedule vs exact SVDs + the full one (HOOI_SWEEPS): within
    1% of the converged relative error on a default-initialized conv kernel (flat spectrum: the
    hard case) and on a well-separated Tucker tensor."""
    torch.manual_seed(0)
    w = nn.Conv2d(96, 96, 3).weight.detach().double()
    for x, ranks in ((w, (24, 24, 3, 3)), (_tucker_tensor((96, 96, 3, 3), (24, 24, 3, 3)), (24, 24, 3, 3))):
        with si_solver("exact"):
            exact = _tucker_error(x, *dec.tucker_hooi(x, ranks))
        with si_solver("randomized"):
            assert dec.Sweeps.for_tensor(x, ranks[0], dec.HOOI_SWEEPS, dec.HOOI_SWEEPS_LARGE) == dec.HOOI_SWEEPS_LARGE
            fast = _tucker_error(x, *dec.tucker_hooi(x, ranks))
        assert exact <= fast <= 1.01 * exact + 1e-12


def _cp_error(x, factors):
    letters = "abcd"[: x.ndim]
    rec = torch.einsum(",".join(f"{c}z" for c in letters) + f"->{letters}", *factors)
    return float((x - rec).norm() / x.norm())


def test_large_cp_schedule_stays_close_to_full_convergence():
    torch.manual_seed(0)
    w = nn.Conv2d(96, 96, 3).weight.detach().double()
    with si_solver("exact"):
        exact = _cp_error(w, dec.cp_als(w, 40))
    with si_solver("randomized"):
        fast = _cp_error(w, dec.cp_als(w, 40))
    assert fast <= 1.02 * exact


def test_tt_svd_with_randomized_svds_stays_close_to_the_exact_tt_svd():
    from tensorly.decomposition import tensor_train

    torch.manual_seed(0)
    x = nn.Conv2d(96, 96, 3).weight.detach().double().movedim(0, -1)  # (c_in, k_h, k_w, c_out)
    ranks = (20, 40, 20)

    def error(cores):
        rec = cores[0]
        for c in cores[1:]:
            rec = torch.tensordot(rec, c, dims=([-1], [0]))
        return float((x - rec.reshape(x.shape)).norm() / x.norm())

    with pytorch_backend():
        reference = error(tensor_train(x, rank=[1, *ranks, 1]))
    with si_solver("exact"):
        assert error(dec.tt_svd(x, ranks)) == pytest.approx(reference, abs=1e-12)
    with si_solver("randomized"):
        assert error(dec.tt_svd(x, ranks)) <= 1.02 * reference


@pytest.mark.parametrize("family", ["lowrank", "cp", "tucker", "tt"])
def test_layer_spectral_init_under_each_solver_on_an_exactly_low_rank_weight(family):
    """Randomized SI recovers a weight of the layer's own (small) rank as exactly as the exact SVD."""
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, bias=False)
    source = tdecomp.factorize(conv, family, 0.05, init="random")
    with torch.no_grad():
        conv.weight.copy_(source.reconstruct())
    for solver in ("exact", "randomized"):
        with si_solver(solver):
            layer = tdecomp.factorize(conv, family, source.rank)
        error = float((layer.reconstruct() - conv.weight).norm() / conv.weight.norm())
        assert error < (0.05 if family == "cp" else 1e-4), (solver, error)
