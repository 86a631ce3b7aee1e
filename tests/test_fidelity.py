"""Every paper config resolves, without training, to the official setup (microsoft/fnl_paper):
grid, per-layer ranks, whole-model parameter ratio, weight-decay groups, lr at each milestone and
init kind, each against the official code's formulas rewritten here (docs/fidelity.md)."""

from __future__ import annotations

import copy
import math
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

import tdecomp
from experiments.sweep import expand, load_sweep
from tdecomp import models
from tdecomp.layers.attention.reduced import HeadReducedAttention
from tdecomp.regularize import frobenius_decay, param_groups
from tdecomp.train.schedule import lr_multiplier

CONFIGS = Path(__file__).parents[1] / "experiments" / "configs"
SPE = 391  # CIFAR-10 steps per epoch at batch 128


def jobs(name: str):
    return expand(load_sweep(CONFIGS / f"{name}.yaml"))


# ---------------------------------------------------------------- official formulas
def official_rank(conv: nn.Conv2d, scale: float) -> int:
    """frob.py:143."""
    a, _, c, _ = conv.weight.shape
    return max(int(round(scale * a * c)), 1)


def official_bisection(model: nn.Module, names: list[str], target: float) -> float:
    """make.py:22-37 (compress_model) on parameter counts: the chosen rank scale."""
    convs = [m for n, m in model.named_modules() if n in names]
    orig = sum(p.numel() for p in model.parameters())
    rest = orig - sum(c.weight.numel() for c in convs)

    def ratio(s: float) -> float:
        return (rest + sum(official_rank(c, s) * (c.weight.shape[0] * c.weight.shape[2]
                                                  + c.weight.shape[1] * c.weight.shape[3]) for c in convs)) / orig

    def rec(lo: float, hi: float) -> float:
        mid = 0.5 * (lo + hi)
        r = ratio(mid)
        if hi - lo < 1e-6 or abs(r - target) < 1e-6:
            return mid
        s = rec(mid, hi) if r < target else rec(lo, mid)
        return s if abs(ratio(s) - target) < abs(r - target) else mid

    return rec(0.0, 1.0)


def official_factorized_names(model_name: str, model: nn.Module) -> list[str]:
    """main_pretrain.py:56,69-73 (EigenDamage), trainer.py:101-117 (akamaster), main.py:581-588 (WRN):
    every conv but the stem (block convs and downsample/shortcut convs)."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return convs[1:]


def official_lr(name: str, epoch: int, model: str) -> float:
    """lr during ``epoch`` (0-based): trainer.py:187-195,254-257; main_pretrain.py:114-117; main.py:58-72."""
    if name.startswith("tensor_wrn"):
        return 0.1 * 0.2 ** sum(epoch >= m for m in (60, 120, 160))
    lr = 0.1 * 0.1 ** sum(epoch >= m for m in (100, 150))
    if name.startswith("rankscale") and model in ("resnet56", "resnet110") and epoch == 0:
        return 0.01
    return lr


def official_rankscale_grid() -> set[tuple]:
    """make.py:356-370 for CIFAR-10, depths 32/56/110: (depth, scale, square, spectral, frob)."""
    grid = set()
    for depth in (32, 56, 110):
        grid.add((depth, 0.0, False, False, False))
        for logscale in range(-3, 3):
            scale = round(3.0**logscale, 3)
            for square in [False] if logscale else [False, True]:
                for spectral in [False, True] if logscale <= 0 else [False]:
                    for frob in (False, True):
                        grid.add((depth, scale, square, spectral, frob))
    return grid


# ---------------------------------------------------------------- models
def _official_resnet_params(depth: int, classes: int = 10) -> int:
    """An independent copy of EigenDamage-Pytorch/models/resnet.py:48-154's parameter layout."""
    n, total, c_in = (depth - 2) // 6, 3 * 64 * 9 + 2 * 64, 64
    for stage, planes in enumerate((64, 128, 256)):
        for block in range(n):
            stride = 2 if stage and not block else 1
            total += c_in * planes * 9 + planes * planes * 9 + 4 * planes
            if stride != 1 or c_in != planes:
                total += c_in * planes + 2 * planes
            c_in = planes
    return total + 256 * classes + classes


def _official_vgg_params(depth: int, classes: int = 10) -> int:
    """models/vgg.py:14-56: conv (no bias) + BN(γ, β) per entry, Linear(512, classes)."""
    cfg = {19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512]}[depth]
    total, c_in = 0, 3
    for v in cfg:
        if v != "M":
            total += c_in * v * 9 + 2 * v
            c_in = v
    return total + 512 * classes + classes


def test_eigendamage_models_have_the_official_parameter_counts():
    resnet = models.create("eigendamage_resnet32")
    vgg = models.create("eigendamage_vgg19")
    assert sum(p.numel() for p in resnet.parameters()) == _official_resnet_params(32) == 7_427_914
    assert sum(p.numel() for p in vgg.parameters()) == _official_vgg_params(19)
    assert models.create("eigendamage_resnet32", num_classes=100)(torch.randn(1, 3, 32, 32)).shape == (1, 100)


# ---------------------------------------------------------------- grids
OFFICIAL_INIT = {"compression_resnet32x2_cifar10": "kaiming-factors",  # main_pretrain.py:78
                 "compression_vgg19_cifar10": "fanout-factors",  # main_pretrain.py:63
                 "tensor_wrn28_10_cifar10": "fanout-factors",  # main.py:593
                 "rankscale_resnet_cifar10": "kaiming-factors"}  # trainer.py:116
OFFICIAL_WD = {"compression_resnet32x2_cifar10": 1e-4, "compression_vgg19_cifar10": 2e-4,  # make.py:98-105
               "tensor_wrn28_10_cifar10": 5e-4, "rankscale_resnet_cifar10": 1e-4}  # main.py:72, make.py:305


def test_compression_grids_are_the_official_ones():
    for name, ratios in (("compression_resnet32x2_cifar10", (0.1, 0.05, 0.02)),  # make.py:138
                         ("compression_vgg19_cifar10", (0.1, 0.05, 0.02))):
        runs = [("dense", 0.0, False, False, j.config.seed) if j.config.family == "dense" else
                (j.config.family, j.config.rank, j.config.init == "spectral", j.config.reg == "fd", j.config.seed)
                for j in jobs(name)]
        official = {("dense", 0.0, False, False, t) for t in (1, 2, 3)} | {
            ("lowrank", r, s, f, t) for r in ratios for s in (False, True) for f in (False, True) for t in (1, 2, 3)}
        assert len(runs) == len(set(runs)) and set(runs) == official, name


def official_tensor_grid() -> set[tuple]:
    """make.py:197-203 (tensor_settings) × trials 1..3: (decomp, ratio, spectral, decay, trial)."""
    grid = set()
    for decomp in ["Conv", "TensorTrain", "Tucker"]:
        for ratio in {"Conv": [0.0, 0.01667, 0.06667], "TensorTrain": [0.234, 0.705], "Tucker": [0.211, 0.68]}[decomp]:
            for spectral in [False, True] if ratio else [False]:
                for decay in ["reglr", "crs", "frob"] if ratio else ["reglr"]:
                    grid |= {(decomp, ratio, spectral, decay, trial) for trial in (1, 2, 3)}
    return grid


def test_tensor_grid_is_the_official_one():
    """Conv = low rank at a whole-model ratio (make.py:166-167); TensorTrain/Tucker = the separable
    block at a rank scale (make.py:168-169); decay reglr/crs/frob = reg wd/crs/fd (make.py:175-182)."""
    runs = []
    for job in jobs("tensor_wrn28_10_cifar10"):
        c = job.config
        if c.family == "dense":
            runs.append(("Conv", 0.0, False, "reglr", c.seed))
            continue
        decomp = {"lowrank": "Conv", "tt": "TensorTrain", "tucker": "Tucker"}[c.family]
        assert c.separable == (decomp != "Conv") and c.budget == "model", job.name
        ratio = c.rank if decomp == "Conv" else c.rank_scale
        assert c.init in ("spectral", "fanout-factors" if decomp == "Conv" else "random"), job.name
        runs.append((decomp, ratio, c.init == "spectral", {"wd": "reglr", "crs": "crs", "fd": "frob"}[c.reg], c.seed))
    assert len(runs) == len(set(runs)) and set(runs) == official_tensor_grid()


def test_rankscale_grid_is_the_official_one():
    ours = set()
    for job in jobs("rankscale_resnet_cifar10"):
        c = job.config
        depth = int(c.model.removeprefix("resnet"))
        if c.family == "dense":
            ours.add((depth, 0.0, False, False, False))
        else:
            deep = c.family_options["overcomplete"] == "deep"
            ours.add((depth, c.rank_scale, deep, c.init == "spectral", c.reg == "fd"))
    assert ours == official_rankscale_grid()
    assert len(jobs("rankscale_resnet_cifar10")) == 3 * len(official_rankscale_grid())  # 3 seeds


@cache
def _factorized(model_name: str, rank: float | None, rank_scale: float | None, overcomplete: str, budget: str):
    torch.manual_seed(0)
    dense = models.create(model_name)
    model = models.create(model_name)
    target = tdecomp.RankScale(rank_scale) if rank_scale is not None else rank
    tdecomp.factorize_model(model, "lowrank", target, init="random", budget=budget, rank_rule="paper",
                            overcomplete=overcomplete, progress=False)
    return dense, model


CIFAR_CONFIGS = ["compression_resnet32x2_cifar10", "rankscale_resnet_cifar10",
                 pytest.param("compression_vgg19_cifar10", marks=pytest.mark.slow),
                 pytest.param("tensor_wrn28_10_cifar10", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", CIFAR_CONFIGS)
def test_every_run_resolves_to_the_official_setup(name):
    for job in jobs(name):
        c = job.config
        # lr at the start of, and around, every milestone
        total = c.epochs * SPE
        f = lr_multiplier(c.schedule, total, c.warmup_steps or round(c.warmup_epochs * SPE), c.milestones,
                          c.gamma, c.warmup_factor)
        for epoch in (0, 1, 59, 60, 99, 100, 119, 120, 149, 150, 159, 160, 199):
            assert c.lr * f(epoch * SPE) == pytest.approx(official_lr(name, epoch, c.model)), (job.name, epoch)
        assert c.weight_decay == OFFICIAL_WD[name] and c.momentum == 0.9 and c.batch_size == 128
        if c.family == "dense" or c.separable:  # the separable block: tests/test_wrn_separable.py
            continue
        assert c.init in ("spectral", OFFICIAL_INIT[name]), job.name
        overcomplete = c.family_options["overcomplete"]
        dense, model = _factorized(c.model, None if c.rank_scale else c.rank, c.rank_scale, overcomplete, c.budget)
        names = official_factorized_names(c.model, dense)
        layers = {n: m for n, m in model.named_modules() if isinstance(m, tdecomp.LowRankLayer)}
        assert sorted(layers) == sorted(names), job.name
        scale = c.rank_scale or official_bisection(dense, names, c.rank)
        for n, m in dense.named_modules():
            if n in names:  # the official rank; a ratio target may move single layers by one step
                slack = 0 if c.rank_scale else 1
                assert abs(layers[n].rank[0] - official_rank(m, scale)) <= slack, (job.name, n)
                assert (layers[n].M is not None) == (overcomplete == "deep")
        n_dense = sum(p.numel() for p in dense.parameters())
        ratio = sum(p.numel() for p in model.parameters()) / n_dense
        if not c.rank_scale:  # whole-model parameter ratio (make.py:22-37)
            assert ratio == pytest.approx(c.rank, rel=0.01), job.name
        # weight decay: everything (BN γ/β and biases too) but FD factors (main_pretrain.py:105-113);
        # crs: factors at weight decay × the model's parameter ratio (deficient-efficient main.py:608-619)
        groups = param_groups(model, c.weight_decay, c.frobenius_coef if c.reg == "fd" else 0.0, c.decay_norms,
                              factor_decay_scale=ratio if c.reg == "crs" else 1.0)
        factor_ids = {id(p) for m in layers.values() for p in m.factors()}
        for g in groups:
            for p in g["params"]:
                official = {"fd": 0.0, "crs": c.weight_decay * ratio}.get(c.reg, c.weight_decay)
                official = official if id(p) in factor_ids else c.weight_decay
                assert g["weight_decay"] == pytest.approx(official, rel=1e-12), (job.name, g["name"])
        if c.reg == "fd":
            assert c.frobenius_coef == c.weight_decay  # coef=args.weight_decay (main_pretrain.py:169)


def test_translation_recipe_is_the_official_one():
    """make.py:206-232 and fairseq inverse_square_root_schedule.py:69-75, options.py:167."""
    for job in jobs("translation_iwslt14"):
        c = job.config
        assert (c.optimizer, c.lr, c.momentum, c.grad_clip) == ("nag", 0.25, 0.99, 0.1)
        assert c.data_kwargs["label_smoothing"] == 0.1 and c.model_kwargs["dropout"] == 0.2
        assert c.model == "transformer_small_fairseq" and c.decay_norms and c.max_tokens == 4000  # make.py:210
        # --max-update 100000 (make.py:218), the fork's only stopping rule (max_epoch unset: ∞); the
        # epochs cap must not bind at an estimated ~1,150 batches per IWSLT'14 epoch (≤ 4,000 tokens)
        official_updates = 100000
        assert c.max_steps == official_updates and c.epochs * 1150 >= 2 * official_updates
        f = lr_multiplier(c.schedule, 10**6, c.warmup_steps, c.milestones, c.gamma, c.warmup_factor)
        for update in (1, 2000, 4000, 4001, 16000, 100000):  # lr of the update-th update
            n = update - 1
            official = 0.25 if n < 4000 else 0.25 * math.sqrt(4000) / math.sqrt(n)
            assert c.lr * f(n) == pytest.approx(official)


# ---------------------------------------------------------------- translation (fairseq fork)
@pytest.fixture
def one_thread():
    """The SVDs of 1024×256 tables crawl when torch's threads outnumber the free cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


D, HEADS, FFN, LAYERS, POSITIONS = 256, 4, 1024, 2, 1024  # transformer.py:597-609, options.py:47
SRC_VOCAB, TGT_VOCAB = 40, 50
LIN = "lin"  # the FactorizedLinear/FactorizedEmbedding modules (singleprocess_train.py:50-64)


def official_transformer_grid() -> list[tuple]:
    """make.py:279-289 as written: (scale, decay, frob, frob_qk, frob_ov, spectral, spectral_ov)."""
    grid = []
    for scale in [0.0, 0.25, 0.5]:
        for decay in [0.0, 1e-6, 5e-6, 1e-5, 5e-5, 1e-4] if scale else [0.0, 1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3]:
            for frob_ov in [False, True] if decay else [False]:
                for frob in [False, True] if decay and scale else [False]:
                    for frob_qk in [False, True] if frob_ov else [False]:
                        for spectral in [False, True] if scale else [False]:
                            for spectral_ov in [False, True] if 0.0 <= decay <= 1e-4 else [False]:
                                grid.append((scale, decay, frob, frob_qk, frob_ov, spectral, spectral_ov))
    return grid


def official_behaviour(scale, decay, frob, frob_qk, frob_ov, spectral, spectral_ov) -> tuple:
    """What the fork does with those flags: (s, SI of the patched layers, SI of the attention
    products, weight decay of every parameter, FD λ, FD-decayed module kinds).

    make.py:261-264: any --wd2fd* flag passes DECAY as --frobenius-decay, else as --weight-decay
    (both default 0, options.py:87,169); singleprocess_train.py:117-125 resets the skiplist to
    quekey/outval unless their flag is set, so the patched layers (frobgrad, frob.py:121) are always
    decayed (frob.py:51-63) and --wd2fd itself changes nothing; no_decay only names weights whose
    weight decay is 0 anyway."""
    fd = decay if (frob or frob_qk or frob_ov) else 0.0
    kinds = {LIN} if fd and 0 < scale < 1 else set()
    kinds |= {k for k, flag in (("quekey", frob_qk), ("outval", frob_ov)) if flag and fd}
    return scale, spectral, spectral_ov, decay - fd, fd if kinds else 0.0, frozenset(kinds)


def official_param_count(scale: float) -> int:
    """transformer.py:72-201 with singleprocess_train.py:50-64 (FactorizedLinear: r(m+n), bias kept)."""
    key = int(scale * D / HEADS) * HEADS if scale else D  # transformer.py:337

    def matrix(m: int, n: int) -> int:
        return round(scale * min(m, n)) * (m + n) if 0 < scale < 1 else m * n

    attention, ffn, norm = 4 * D * key, 2 * matrix(FFN, D), 2 * D
    encoder = matrix(SRC_VOCAB, D) + matrix(POSITIONS, D) + LAYERS * (attention + ffn + 2 * norm) + norm
    decoder = matrix(TGT_VOCAB, D) + matrix(POSITIONS, D) + LAYERS * (2 * attention + ffn + 3 * norm) + norm
    return encoder + decoder + matrix(TGT_VOCAB, D) + TGT_VOCAB


OFFICIAL_PATCHED = {f"{coder}.embed_{kind}" for coder in ("encoder", "decoder") for kind in ("tokens", "positions")} | {
    f"{coder}.blocks.{i}.ffn.fc{j}" for coder in ("encoder", "decoder") for i in range(LAYERS) for j in (1, 2)} | {
    "out_embed"}  # singleprocess_train.py:52-64 (out_embed: the decoder's, the loop variable after the loop)


@cache
def _fairseq_model(scale: float, init: str | None, spectral_attention: bool):
    """(dense reference, the run's model) built as the trainer builds them, same seed."""
    torch.manual_seed(0)
    dense = models.create("transformer_small_fairseq", src_vocab=SRC_VOCAB, tgt_vocab=TGT_VOCAB,
                          rank_scale=scale, spectral_attention=spectral_attention)
    model = copy.deepcopy(dense)
    if scale:
        tdecomp.factorize_model(model, "lowrank", tdecomp.RankScale(scale), init=init, skip=set(),
                                targets=("linear", "embedding"), progress=False)
    return dense, model


def _kind(name: str) -> str:
    return next((k for k in ("quekey", "outval") if f".{k}." in name), LIN)


@cache
def _fd_kinds(key: tuple, skip: tuple[str, ...]) -> frozenset[str]:
    """The kinds of factors that FD (as the trainer adds it) reaches, read off autograd."""
    _, model = _fairseq_model(*key)
    model.zero_grad()
    frobenius_decay(model, skip).backward()
    factors = {id(p) for m in tdecomp.regularize._outermost_factorized(model) for p in m.factor_parameters()}
    reached: dict[str, set[bool]] = {}
    for name, p in model.named_parameters():
        if id(p) in factors:
            reached.setdefault(_kind(name), set()).add(p.grad is not None and bool(p.grad.any()))
    assert all(len(flags) == 1 for flags in reached.values()), reached  # a kind is decayed whole
    return frozenset(kind for kind, flags in reached.items() if True in flags)


def _our_behaviour(c) -> tuple:
    scale, spectral_attention = c.model_kwargs["rank_scale"], c.model_kwargs["spectral_attention"]
    assert (c.rank_scale or 0.0) == scale and (c.family == "lowrank") == (scale > 0)
    if scale:  # the patched layers: SI or the fork's per-factor draws, all of them, no skip
        assert c.init in ("spectral", "fairseq-factors") and c.skip == [] and c.targets == ["linear", "embedding"]
    key = (scale, c.init if scale else None, spectral_attention)
    _, model = _fairseq_model(*key)
    fd = c.frobenius_coef if c.reg == "fd" else 0.0
    groups = param_groups(model, c.weight_decay, fd, c.decay_norms)
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    (wd,) = {g["weight_decay"] for g in groups}  # every parameter alike (the fork's no_decay is empty)
    kinds = _fd_kinds(key, tuple(c.fd_skip)) if fd else frozenset()
    return scale, bool(scale) and c.init == "spectral", spectral_attention, wd, fd if kinds else 0.0, kinds


@pytest.mark.usefixtures("one_thread")
def test_translation_grid_is_the_official_one():
    """Every official setting's behaviour once (--wd2fd changes nothing, see official_behaviour),
    three trials each (make.py:384-388), and nothing else."""
    official = {official_behaviour(*setting) for setting in official_transformer_grid()}
    assert len(official_transformer_grid()) == 286 and len(official) == 206
    runs = [(_our_behaviour(j.config), j.config.seed) for j in jobs("translation_iwslt14")]
    assert len(runs) == len(set(runs)) == 3 * len(official)
    assert {b for b, _ in runs} == official and {s for _, s in runs} == {1, 2, 3}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("scale", [0.0, 0.25, 0.5])
def test_translation_model_factorizes_what_the_fork_does(scale):
    """Per-layer ranks and shapes, the head dimension and the parameter count of the fork's model."""
    dense, model = _fairseq_model(scale, "spectral" if scale else None, False)
    assert sum(p.numel() for p in model.parameters()) == official_param_count(scale)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, tdecomp.LowRankLayer)}
    assert set(layers) == (OFFICIAL_PATCHED if scale else set())
    for name, layer in layers.items():
        m, n = dense.get_submodule(name).weight.shape
        r = round(scale * min(m, n))  # frob.py:101
        assert layer.U.shape == (m, r) and layer.V.shape == (n, r) and layer.M is None, name
    head = int(scale * D / HEADS) if scale else D // HEADS  # transformer.py:337,346
    attention = [m for m in model.modules() if isinstance(m, HeadReducedAttention)]
    assert len(attention) == 3 * LAYERS
    for att in attention:
        for pairs in (att.quekey.pairs, att.outval.pairs):
            assert pairs.U.shape == pairs.V.shape == (HEADS, D, head)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("scale", [0.25, 0.5])
def test_translation_inits_are_the_forks(scale):
    """--spectral: the truncated SVD of the dense layer (frob.py:66-70,105-108); otherwise each
    factor drawn as its dense module (singleprocess_train.py:57,61); --spectral-quekey/-outval:
    balanced factors of the same products (frob.py:73-76)."""
    dense, model = _fairseq_model(scale, "spectral", True)
    for name, layer in model.named_modules():
        if isinstance(layer, tdecomp.LowRankLayer):
            p, s, qh = torch.linalg.svd(dense.get_submodule(name).weight.detach(), full_matrices=False)
            r = layer.rank[0]
            torch.testing.assert_close(layer.reconstruct(), (p[:, :r] * s[:r]) @ qh[:r], rtol=1e-4, atol=1e-5)
    _, drawn = _fairseq_model(scale, "fairseq-factors", False)
    for name, layer in drawn.named_modules():
        if isinstance(layer, tdecomp.LowRankLayer):
            for factor in (layer.U.detach(), layer.V.detach()):
                if ".embed_" in name:
                    assert float(factor.std()) == pytest.approx(0.1, rel=0.15), name
                else:
                    assert float(factor.abs().max()) <= 0.1 and float(factor.std()) == pytest.approx(
                        0.2 / math.sqrt(12), rel=0.15), name
    _, unbalanced = _fairseq_model(scale, "spectral", False)
    for attention_model, spectral in ((model, True), (unbalanced, False)):
        for att in (m for m in attention_model.modules() if isinstance(m, HeadReducedAttention)):
            for pairs in (att.quekey.pairs, att.outval.pairs):
                u, v = pairs.U.detach(), pairs.V.detach()
                assert torch.allclose(u.mT @ u, v.mT @ v, rtol=1e-3, atol=1e-5) == spectral
