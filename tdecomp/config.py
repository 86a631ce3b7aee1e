"""Run configuration: a typed schema, YAML files and ``key=value`` command-line overrides.

Every key is a field of :class:`TrainConfig`. Unknown keys and bad values are rejected with a
message listing the valid ones. Overrides are parsed as YAML scalars (``rank=0.25`` is a float,
``rank=8`` an int, ``rank=[8,8,3,3]`` a list) and dotted keys reach into dict-valued fields
(``model_kwargs.width=2``).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import dotted, yaml_values
from ._svd import SI_SOLVERS
from ._validation import check_choice
from .init import FACTORIZED_INIT_METHODS
from .layers.options import check_options, without_defaults
from .layers.registry import available_families, get_family
from .layers.separable import separable_families
from .surgery import BUDGETS

FAMILY_CHOICES_EXTRA = ("dense",)
CHOICES: dict[str, tuple[str, ...]] = {
    "init": FACTORIZED_INIT_METHODS,
    "si_solver": SI_SOLVERS,
    "budget": BUDGETS,
    "reg": ("fd", "wd", "crs", "none"),
    "optimizer": ("sgd", "nag", "adamw"),
    "schedule": ("step", "cosine", "inverse_sqrt", "constant"),
    "amp": ("none", "bf16", "fp16"),
}
# ``compile``: false (eager), true (= "default") or a torch.compile mode; "reduce-overhead" also
# captures the whole step in CUDA graphs (fixed shapes).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def registry_choices() -> dict[str, tuple[str, ...]]:
    """Valid ``model``, ``data``, ``family`` and ``allocation`` names: the registries (importing them
    registers all)."""
    from .allocation import available_allocations
    from .data import available_datasets
    from .layers import available_families
    from .models import available_models

    return {"model": available_models(), "data": available_datasets(),
            "family": FAMILY_CHOICES_EXTRA + available_families(), "allocation": available_allocations()}


# keys that build the registry's data and model (``Trainer(config)``); a run on given objects
# (``Trainer.from_objects``, ``tdecomp.fit``) leaves them at their defaults, ``model`` and ``data`` null
OBJECT_KEYS = ("model", "model_kwargs", "data", "data_kwargs", "data_dir", "download", "subset", "val_fraction",
               "split_seed", "batch_size", "max_tokens", "eval_batch_size", "workers",
               # calibration batches come from the data; the distillation teacher is the named model
               "calibration_batches", "distill", "distill_weight")

# top-level keys that config.yaml files held before ``family_options`` (see migrate_family_options)
LEGACY_OPTION_KEYS = ("overcomplete", "rank_rule")

# keys a resumed run may change; the rest must equal the interrupted run's config.yaml. More
# ``epochs`` extends a run (the lr schedule is recomputed for the new total from the current step).
RESUME_MAY_CHANGE = frozenset(
    {"resume", "progress", "device", "workers", "eval_batch_size", "compile", "out", "epochs", "log_every"}
)


@dataclass
class TrainConfig:
    """Everything that defines a training run (defaults: the paper's CIFAR recipe, shortened)."""

    # what to train (null model/data: the trainer was given the objects, Trainer.from_objects)
    model: str | None = "cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {width: 2}
    data: str | None = "digits"
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    data_dir: str = "data"
    download: bool = False
    subset: int = 0  # train on N examples (0: all), a stratified draw resampled per seed
    val_fraction: float = 0.0  # > 0: this stratified fraction of the training data becomes a validation split
    split_seed: int = 0  # seeds the validation split (not the run's seed: every run validates on the same examples)
    #   (a dataset's own train/test split, where it draws one, keeps its data_kwargs.split_seed)
    # factorization
    family: str = "dense"  # dense | a registered family (tdecomp.available_families())
    rank: float | int | list[int] = 0.25  # float: parameter ratio; int/list: explicit ranks
    init: str = "spectral"  # spectral | whitened (SI by output error, reads calibration data) | random
    #   | the per-factor draws a family defines (kaiming-factors, …)
    si_solver: str = "auto"  # SVDs of spectral init: auto (randomized for large matrices) | exact | randomized
    rank_scale: float | None = None  # set: every layer at this rank scale (rank is then unused)
    # the family's options (its FamilyOption schema; `tdecomp train --help` lists them), e.g.
    # family_options.fixed_spatial=false; kept without the entries equal to their defaults, empty for dense
    family_options: dict[str, Any] = field(default_factory=dict)
    budget: str = "layers"  # float rank is a ratio of: layers (factorized ones) | model (whole)
    reg: str = "fd"  # fd: Frobenius decay on products | wd: weight decay on factors | none
    #   | crs: weight decay × the model's parameter ratio on factors (tdecomp.reg_policy)
    separable: bool = False  # k×k convs → dense depthwise + tensor 1×1 (official Table 2), families that serve it
    skip: str | list[str] = "default"  # layers kept dense ("default": first conv + classifier)
    targets: list[str] = field(default_factory=lambda: ["linear", "conv"])  # + "attention"
    allocation: str = "uniform"  # how a float rank's budget is shared: uniform | energy | stable-rank
    #   | whitened-energy | fisher (these two read calibration data)
    init_from: str = ""  # run folder or checkpoint whose model weights are loaded before factorizing
    calibration_batches: int = 8  # training batches whitened init and the data-aware allocations calibrate on
    distill: float = 0.0  # > 0: distil from init_from's dense model at this temperature T (0: off)
    distill_weight: float = 0.5  # α: loss = (1 − α)·task loss + α·T²·KL(teacher ‖ student)
    # optimization (paper: SGD 0.9, lr 0.1, batch 128, ×0.1 at 50% and 75%, wd 1e-4)
    optimizer: str = "sgd"  # sgd | nag (SGD with Nesterov momentum, as fairseq's nag) | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decay_norms: bool = False  # also weight-decay norm γ/β and biases (the official code does)
    fd_coef: float | None = None  # Frobenius-decay λ; None: same as weight_decay (as the paper)
    fd_skip: list[str] = field(default_factory=list)  # factorized modules whose name ends so get no FD
    fd_no_decay: list[str] = field(default_factory=list)  # factorized reg=fd runs: modules whose name ends so get no WD
    rebalance: bool | None = None  # tdecomp.rebalance after each step; None: on under reg=fd
    schedule: str = "step"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of training
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_steps: int = 0  # > 0: warm-up length in optimizer steps (overrides warmup_epochs)
    warmup_factor: float | None = None  # null: linear warm-up from 0; c: constant c× lr during warm-up
    epochs: int = 10  # upper bound when max_steps > 0
    max_steps: int = 0  # > 0: stop after this many optimizer steps (mid-epoch) or after epochs, whichever first
    batch_size: int = 128  # global batch (split over DDP processes)
    max_tokens: int = 0  # > 0: training batches of ≤ this many (padded) tokens per process, as fairseq
    eval_batch_size: int = 512
    grad_clip: float = 0.0  # max global grad norm (0: off)
    # execution
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "none"  # none | bf16 | fp16 (CUDA)
    compile: bool | str = False  # false | true | default | reduce-overhead | max-autotune
    tf32: bool = True  # TF32 float32 matmuls/convs on CUDA (as timm and nanoGPT)
    channels_last: bool = False
    workers: int = 0
    out: str = "runs/default"
    resume: bool = False
    progress: bool = True
    log_every: int = 50  # steps between host syncs: NaN check, progress-bar loss
    # analysis hooks (see analysis/)
    track_every: int = 0  # DynamicsTracker every N steps (0: off)
    norm_match: str = ""  # dynamics.jsonl of an FD run whose norm trajectory to impose

    def __post_init__(self) -> None:
        self.validate()
        self.family_options = canonical_family_options(self.family, self.family_options)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad value and the valid ones."""
        from .surgery import TARGETS

        for key, choices in registry_choices().items():
            if not (key in ("model", "data") and getattr(self, key) is None):  # given objects
                check_choice(key, getattr(self, key), choices)
        if not isinstance(self.family_options, dict) or not all(isinstance(k, str) for k in self.family_options):
            raise ValueError(f"family_options must map option names to values (family_options.NAME=value), "
                             f"got {self.family_options!r}")
        if self.family != "dense":
            check_options(self.family, get_family(self.family).options, self.family_options)
        if not isinstance(self.init_from, str):
            raise ValueError(f"init_from must be a run folder or checkpoint path (or empty), got {self.init_from!r}")

        if not isinstance(self.targets, list) or not self.targets:
            raise ValueError(f"targets must be a non-empty list drawn from {sorted(TARGETS)}, got {self.targets!r}")
        for target in self.targets:
            check_choice("targets", target, tuple(TARGETS))
        for key, choices in CHOICES.items():
            check_choice(key, getattr(self, key), choices)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(
                f"device={self.device!r} is not valid; expected one of: 'auto', 'cpu', 'cuda', 'cuda:N'"
            )
        if not isinstance(self.compile, bool):
            check_choice("compile", self.compile, (False, True, *COMPILE_MODES))
        if isinstance(self.log_every, bool) or not isinstance(self.log_every, int) or self.log_every < 1:
            raise ValueError(f"log_every must be an int ≥ 1 (steps between host syncs), got {self.log_every!r}")
        if isinstance(self.track_every, bool) or not isinstance(self.track_every, int) or self.track_every < 0:
            raise ValueError(f"track_every must be an int ≥ 0 (0: off), got {self.track_every!r}")
        if not isinstance(self.norm_match, str):
            raise ValueError(f"norm_match must be a path to a dynamics.jsonl (or empty), got {self.norm_match!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int ≥ 0 (0: use warmup_epochs), got {self.warmup_steps!r}")
        calibration = self.calibration_batches
        if isinstance(calibration, bool) or not isinstance(calibration, int) or calibration < 1:
            raise ValueError(f"calibration_batches must be an int ≥ 1, got {calibration!r}")
        if isinstance(self.distill, bool) or not isinstance(self.distill, (int, float)) or self.distill < 0:
            raise ValueError(f"distill must be a temperature > 0, or 0 for no distillation, got {self.distill!r}")
        if self.distill and not self.init_from:
            raise ValueError(f"distill={self.distill} distils from the dense model of init_from, which is empty; "
                             "pass init_from=RUN (tdecomp compress sets it to its SOURCE)")
        weight = self.distill_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise ValueError(f"distill_weight must be a number in [0, 1], got {weight!r}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 0:
            raise ValueError(f"max_steps must be an int ≥ 0 (0: train for epochs), got {self.max_steps!r}")
        fraction = self.val_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"val_fraction must be a number in [0, 1) (0: no validation split), got {fraction!r}")
        for key in ("seed", "split_seed"):  # NumPy's generators (data subsets, splits) take no negative seed
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be an int ≥ 0, got {value!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 0:
            raise ValueError(f"max_tokens must be an int ≥ 0 (0: batch_size examples), got {self.max_tokens!r}")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) <= 0:
                raise ValueError(f"{key} must be a positive int, got {getattr(self, key)!r}")
        for key in ("lr", "weight_decay", "momentum", "gamma", "warmup_epochs", "grad_clip"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{key} must be a number ≥ 0, got {value!r}")
        factor = self.warmup_factor
        if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0):
            raise ValueError(f"warmup_factor must be a number > 0 or null (linear warm-up), got {self.warmup_factor!r}")
        if self.fd_coef is not None and (not isinstance(self.fd_coef, (int, float)) or self.fd_coef < 0):
            raise ValueError(f"fd_coef must be a number ≥ 0 or null, got {self.fd_coef!r}")
        if not isinstance(self.fd_skip, list) or not all(isinstance(e, str) and e for e in self.fd_skip):
            raise ValueError(f"fd_skip must be a list of module-name suffixes (e.g. [quekey]), got {self.fd_skip!r}")
        if not isinstance(self.fd_no_decay, list) or not all(isinstance(e, str) and e for e in self.fd_no_decay):
            raise ValueError(f"fd_no_decay must be a list of module-name suffixes (e.g. [feature.31]), "
                             f"got {self.fd_no_decay!r}")
        if self.rebalance is not None and not isinstance(self.rebalance, bool):
            raise ValueError(f"rebalance must be true, false or null (on under reg=fd), got {self.rebalance!r}")
        if not all(isinstance(m, (int, float)) and 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be fractions of training in (0, 1), got {self.milestones!r}")
        if self.rank_scale is not None and (
            isinstance(self.rank_scale, bool) or not isinstance(self.rank_scale, (int, float)) or self.rank_scale <= 0
        ):
            raise ValueError(f"rank_scale must be a number > 0 or null, got {self.rank_scale!r}")
        if not isinstance(self.separable, bool):
            raise ValueError(f"separable must be true or false, got {self.separable!r}")
        if self.separable and self.family != "dense" and self.family not in separable_families():
            raise ValueError(f"separable=true takes family {' or '.join(separable_families())}, "
                             f"got family={self.family!r}")
        if not isinstance(self.decay_norms, bool):
            raise ValueError(f"decay_norms must be true or false, got {self.decay_norms!r}")
        rank = self.rank
        if isinstance(rank, bool) or not (
            isinstance(rank, (int, float))
            or (isinstance(rank, list) and all(isinstance(r, int) for r in rank))
        ):
            raise ValueError(f"rank must be a float ratio, an int or a list of ints, got {rank!r}")
        if not all(r > 0 for r in (rank if isinstance(rank, list) else [rank])) or rank == []:
            raise ValueError(f"rank must be positive (a parameter ratio, an int or a list of ints), got {rank!r}")
        if isinstance(rank, float) and self.family != "dense":
            get_family(self.family).check_ratio(rank)

    def conflicts(self, saved: dict[str, Any], may_change: Collection[str] = RESUME_MAY_CHANGE) -> list[str]:
        """Keys, outside ``may_change``, whose value differs from ``saved`` (a run's config.yaml).

        The default is what a resumed run may not change: everything that defines the model, data
        or optimization (only :data:`RESUME_MAY_CHANGE` may differ, e.g. more ``epochs``)."""
        current = self.to_dict()
        # a key added after ``saved`` was written ran at its default (keys are added that way)
        saved = {**default_values(), **migrate_family_options(saved)}
        return [k for k in current if k not in may_change and saved.get(k) != current[k]]

    @property
    def compile_mode(self) -> str | None:
        """The ``torch.compile`` mode, or None for eager."""
        if self.compile is False:
            return None
        return "default" if self.compile is True else self.compile

    @property
    def factor_rank(self) -> float | int | tuple[int, ...]:
        """``rank`` as tdecomp.factorize expects it (lists become tuples; ``rank_scale`` wins)."""
        from .layers.ranks import RankScale

        if self.rank_scale is not None:
            return RankScale(self.rank_scale)
        return tuple(self.rank) if isinstance(self.rank, list) else self.rank

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = migrate_family_options(values)
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in valid:
                hint = difflib.get_close_matches(key, valid, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ValueError(f"unknown config key {key!r}{suggestion}; valid keys: {', '.join(valid)}")
        return cls(**values)

    def to_yaml(self, path: Path | str) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def default_values() -> dict[str, Any]:
    """:class:`TrainConfig`'s default values, without building (i.e. validating) one: what a key that a
    saved config (an older run's config.yaml, a record) lacks ran at."""
    return {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(TrainConfig)}


def canonical_family_options(family: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the entries equal to the family's defaults (so equal settings compare
    equal, and factorized attention, which takes no options, runs under a family's defaults); empty
    for ``dense``, whose runs factorize nothing (a sweep's dense baselines share its family's options)."""
    return {} if family == "dense" else without_defaults(get_family(family).options, options)


def migrate_family_options(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` of a config file with the keys of :data:`LEGACY_OPTION_KEYS` moved into ``family_options``.

    Run folders written before family options had their own key hold these options at the top
    level (always written, applied only to the family that declares them and only away from their
    defaults); they must still load, resume and be recognised as the same run. An option the
    run's family does not declare had no effect and is dropped.
    """
    if not any(key in values for key in LEGACY_OPTION_KEYS):
        return values
    values = dict(values)
    legacy = {key: values.pop(key) for key in LEGACY_OPTION_KEYS if key in values}
    family = values.get("family", "dense")
    if family in available_families():
        declared = {o.name for o in get_family(family).options}
        options = {k: v for k, v in legacy.items() if k in declared}
        values["family_options"] = canonical_family_options(family, {**options, **values.get("family_options", {})})
    return values


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` → ``{"a": 1, "b": {"c": "x"}}`` with YAML-typed values."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"override {pair!r} is not of the form key=value")
        dotted.put(out, key, yaml_values.load(raw) if raw != "" else "")
    return out


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path | str | None = None, overrides: list[str] | dict[str, Any] = ()) -> TrainConfig:
    """Defaults ← YAML file ``path`` (if any) ← overrides, validated."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        values = yaml_values.load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"config file {path} must hold a mapping of keys to values")
    if not isinstance(overrides, dict):
        overrides = parse_overrides(list(overrides))
    return TrainConfig.from_dict(_merge(values, overrides))
