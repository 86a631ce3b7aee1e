"""Every paper config resolves, without training, to the official setup (microsoft/fnl_paper):
grid, per-layer ranks, whole-model parameter ratio, weight-decay groups, lr at each milestone and
init kind, each against the official code's formulas rewritten here (docs/fidelity.md)."""

from __future__ import annotations

import copy
import math
import re
from functools import cache

import pytest
import torch
from torch import nn

import tdecomp
from tdecomp import models
from tdecomp.commands.paths import configs_folder
from tdecomp.experiments.sweep import expand, load_sweep
from tdecomp.layers.attention.reduced import HeadReducedAttention
from tdecomp.reg_policy import RegPolicy
from tdecomp.regularize import frobenius_decay
from tdecomp.train.schedule import lr_multiplier

CONFIGS = configs_folder()
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


OFFICIAL_VGG_CONFIGS = {19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                             512, 512, 512, 512]}  # models/vgg.py:14-19


def _official_vgg_params(depth: int, classes: int = 10) -> int:
    """models/vgg.py:14-56: conv (no bias) + BN(γ, β) per entry, Linear(512, classes)."""
    total, c_in = 0, 3
    for v in OFFICIAL_VGG_CONFIGS[depth]:
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
        if not c.rank_scale:  # whole-model parameter ratio (make.py:22-37)
            ratio = sum(p.numel() for p in model.parameters()) / sum(p.numel() for p in dense.parameters())
            assert ratio == pytest.approx(c.rank, rel=0.01), job.name
        # weight decay and FD: test_every_parameter_is_decayed_as_the_official_code_decays_it


# ---------------------------------------------------------------- weight decay and FD, by name
# The official trainers give a parameter no (or "crs") weight decay when a no_decay entry is a
# SUBSTRING of its name, and FD to a FactorizedConv unless its module name ENDS with a skiplist
# entry (frob.py:51-55). Both read the patched model's names: patch_module (frob.py:215-220) sets
# the FactorizedConv (U, VT, and M under --square: frob.py:144-156) on the attribute the conv was
# reached through, so WRN's `conv1.conv` becomes `conv1` and ResNet's `downsample.0` `downsample`.
def official_vgg_layout(depth: int = 19) -> tuple[list[str], list[str], list[str]]:
    """models/vgg.py:36,43-56 (conv, BN, ReLU per entry, one pool per "M") and main_pretrain.py:56,
    65-66: (parameters outside the patched convs, the patched convs, the no_decay/skiplist list =
    the patched convs' indices as strings)."""
    other, convs, i = ["classifier.weight", "classifier.bias"], [], 0
    for v in OFFICIAL_VGG_CONFIGS[depth]:
        if v == "M":
            i += 1
            continue
        convs.append(i)
        other += [f"feature.{i + 1}.weight", f"feature.{i + 1}.bias"]
        i += 3
    names = [str(i) for i in convs if i]  # `if i`: the stem stays dense
    return [*other, f"feature.{convs[0]}.weight"], [f"feature.{n}" for n in names], names


def official_resnet_layout(model: str) -> tuple[list[str], list[str], list[str]]:
    """EigenDamage models/resnet.py:48-63,108-130 with main_pretrain.py:68-81 (conv1, conv2 and the
    1×1 downsample of each stage's first block at stride 2), or akamaster resnet.py (option-A
    shortcuts: no parameters) with trainer.py:101-119."""
    eigendamage = model.startswith("eigendamage")
    depth = int(model.removeprefix("eigendamage_").removeprefix("resnet"))
    other, convs = ["conv1.weight", "bn.weight" if eigendamage else "bn1.weight", "linear.weight", "linear.bias"], []
    other.append(other[1].replace("weight", "bias"))
    for stage in (1, 2, 3):
        for j in range((depth - 2) // 6):
            block = f"layer{stage}.{j}"
            convs += [f"{block}.conv1", f"{block}.conv2"]
            other += [f"{block}.bn{k}.{p}" for k in (1, 2) for p in ("weight", "bias")]
            if eigendamage and stage > 1 and j == 0:
                convs.append(f"{block}.downsample")
                other += [f"{block}.bn3.weight", f"{block}.bn3.bias"]
    return other, convs, [".conv1", ".conv2", "downsample"] if eigendamage else [".conv1", ".conv2"]


def official_wrn_layout(depth: int = 28) -> tuple[list[str], list[str]]:
    """deficient-efficient models/wide_resnet.py:84-104, blocks.py:309-324 and main.py:581-588: block
    convs conv1/conv2 and the 1×1 convShortcut of each stage's first block (16→160, 160→320, 320→640)."""
    other, convs = ["conv1.weight", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"], []
    for stage in (1, 2, 3):
        for j in range((depth - 4) // 6):
            block = f"block{stage}.0.layer.{j}"
            convs += [f"{block}.conv1", f"{block}.conv2"] + ([f"{block}.convShortcut"] if j == 0 else [])
            other += [f"{block}.bn{k}.{p}" for k in (1, 2) for p in ("weight", "bias")]
    return other, convs


def official_regularization(model: str, reg: str, wd: float, ratio: float, square: bool = False,
                            ) -> tuple[dict[str, float], set[str]]:
    """A factorized official run's weight decay per parameter name and the convs FD decays (coef = wd).

    reg fd = --wd2fd; for WRN (make.py:175-182) wd = reglr (--nocrswd), crs = no flag."""
    if model == "wrn28_10":  # main.py:595-596,608-620
        other, patched = official_wrn_layout()
        wd2fd, nocrswd = reg == "fd", reg == "wd"
        no_decay = [".conv1", ".conv2", "convShortcut"] if wd2fd else []
        skiplist = [] if wd2fd else [".conv1", ".conv2", "convShortCut"]  # sic: the module is convShortcut
        if not wd2fd and not nocrswd:
            no_decay = no_decay + [".conv1", ".conv2", "convShortcut"]
            alt = wd * ratio
        else:
            alt = 0.0
    else:  # main_pretrain.py:65-66,80-81; trainer.py:118-119
        other, patched, names = official_vgg_layout() if "vgg" in model else official_resnet_layout(model)
        no_decay = names if reg == "fd" else []
        skiplist = [] if reg == "fd" else names
        alt = 0.0
    params = other + [f"{m}.{f}" for m in patched for f in ("U", "VT", *("M" if square else ""))]
    decay = {n: alt if any(nd in n for nd in no_decay) else wd for n in params}
    return decay, {m for m in patched if not any(m[-len(e):] == e for e in skiplist)}


def official_name(model: str, ours: str) -> str:
    """Our parameter name → the official one (V is stored transposed as VT)."""
    name = re.sub(r"\.V$", ".VT", ours)
    if model == "eigendamage_resnet32":
        return name.replace(".downsample.0.", ".downsample.")
    if model == "wrn28_10":  # 4 blocks per stage (depth 28)
        name = re.sub(r"^blocks\.(\d+)\.", lambda m: f"block{int(m[1]) // 4 + 1}.0.layer.{int(m[1]) % 4}.", name)
        name = re.sub(r"^bn\.", "bn1.", re.sub(r"^linear\.", "fc.", name))
        return name.replace(".shortcut.", ".convShortcut.")
    return name


def our_regularization(c, dense: nn.Module, model: nn.Module) -> tuple[dict[str, float], set[str]]:
    """The trainer's weight decay per parameter name (its regularization policy's groups, on the model
    alone: a Trainer would load CIFAR) and the parameters its FD term (reg=fd) reaches, read off autograd."""
    ratio = sum(p.numel() for p in model.parameters()) / sum(p.numel() for p in dense.parameters())
    wd = {id(p): g["weight_decay"] for g in RegPolicy.from_config(c).param_groups(model, ratio) for p in g["params"]}
    reached: set[str] = set()
    if c.reg == "fd" and c.family != "dense":
        model.zero_grad(set_to_none=True)
        frobenius_decay(model, c.fd_skip).backward()
        reached = {n for n, p in model.named_parameters() if p.grad is not None and bool(p.grad.any())}
        model.zero_grad(set_to_none=True)
    return {n: wd[id(p)] for n, p in model.named_parameters()}, reached


@pytest.mark.parametrize("name", ["compression_vgg19_cifar10", "compression_resnet32x2_cifar10",
                                  "rankscale_resnet_cifar10", "tensor_wrn28_10_cifar10"])
def test_every_parameter_is_decayed_as_the_official_code_decays_it(name):
    """Each setting of the config (seeds and inits alike) once: weight decay parameter by parameter
    and the FD-decayed convs against the official name rules. One deliberate deviation
    (docs/fidelity.md row 26): the official WRN reglr/crs runs also FD-decay the shortcut convs."""
    settings = {}
    for job in jobs(name):
        c = job.config
        if not c.separable:  # the separable block: tests/test_wrn_separable.py
            setting = {k: v for k, v in c.to_dict().items() if k not in ("seed", "init", "out")}
            settings.setdefault(repr(sorted(setting.items())), c)
    for c in settings.values():
        if c.family == "dense":  # the official unfactorized run: no_decay = skiplist = [] (main_pretrain.py:94)
            dense = models.create(c.model)
            decay, reached = our_regularization(c, dense, dense)
            assert set(decay.values()) == {c.weight_decay} and not reached, c.model
            continue
        overcomplete = c.family_options["overcomplete"]
        dense, model = _factorized(c.model, None if c.rank_scale else c.rank, c.rank_scale, overcomplete, c.budget)
        decay, reached = our_regularization(c, dense, model)
        ratio = sum(p.numel() for p in model.parameters()) / sum(p.numel() for p in dense.parameters())
        official_decay, official_fd = official_regularization(c.model, c.reg, c.weight_decay, ratio,
                                                              square=overcomplete == "deep")
        ours = {official_name(c.model, n): wd for n, wd in decay.items()}
        assert ours.keys() == official_decay.keys(), c.model
        for n, wd in official_decay.items():
            assert ours[n] == pytest.approx(wd, rel=1e-12, abs=0), (c.model, c.reg, n)
        typo = c.model == "wrn28_10" and c.reg != "fd"  # the skiplist's 'convShortCut' misses these
        shortcut_typo = {m for m in official_fd if m.endswith(".convShortcut")} if typo else set()
        assert {official_name(c.model, n).rpartition(".")[0] for n in reached} == official_fd - shortcut_typo
        if c.reg == "fd":  # coef=args.weight_decay (main_pretrain.py:169, main.py:654)
            assert RegPolicy.from_config(c).fd_coef == c.weight_decay


def test_the_official_name_rules_hit_these_parameters():
    """The enumeration behind docs/fidelity.md rows 11 and 26."""
    factor = (".U", ".VT")
    # VGG-19 --wd2fd: no_decay "3", "7", "10", … are substrings of BN layers 31, 34, 37 and 47's names
    decay, fd = official_regularization("eigendamage_vgg19", "fd", 2e-4, 1.0)
    undecayed = {n for n, wd in decay.items() if wd == 0}
    assert {n for n in decay if n.endswith(factor)} <= undecayed and len(fd) == 15
    assert undecayed - {n for n in decay if n.endswith(factor)} == {
        f"feature.{i}.{p}" for i in (31, 34, 37, 47) for p in ("weight", "bias")}
    assert official_regularization("eigendamage_vgg19", "wd", 2e-4, 1.0) == ({n: 2e-4 for n in decay}, set())
    # EigenDamage ResNet32 and akamaster ResNets --wd2fd: the factors and nothing else
    for model in ("eigendamage_resnet32", "resnet32", "resnet110"):
        decay, _ = official_regularization(model, "fd", 1e-4, 1.0, square=True)
        assert {n for n, wd in decay.items() if wd == 0} == {n for n in decay if n.endswith((*factor, ".M"))}
    # WRN-28-10: no_decay hits the factors only; the skiplist misses the three shortcut convs
    shortcuts = {f"block{s}.0.layer.0.convShortcut" for s in (1, 2, 3)}
    for reg, factor_wd in (("wd", 5e-4), ("crs", 5e-4 / 15), ("fd", 0.0)):
        decay, fd = official_regularization("wrn28_10", reg, 5e-4, 1 / 15)
        assert {n for n, wd in decay.items() if wd != 5e-4} == ({n for n in decay if n.endswith(factor)}
                                                                if factor_wd != 5e-4 else set())
        assert fd == (set(official_wrn_layout()[1]) if reg == "fd" else shortcuts)


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
    policy = RegPolicy.from_config(c)
    fd = policy.fd_coef
    groups = policy.param_groups(model, 1.0)
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
