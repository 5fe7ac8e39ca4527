"""Training configuration: one flat dataclass, recipe files (YAML) and command-line overrides.

Every field of ``TrainConfig`` is a recipe key and a command-line flag (``batch_size`` <-> ``--batch-size``).
A run's configuration is: the dataclass defaults, then the recipe file, then the flags given. Unknown
recipe keys are errors, so a typo never silently falls back to a default, and every value's type is
checked against the field's (an integer is accepted for a float field). Recipes are read with YAML
1.2's numbers: ``lr: 1e-3`` is the float 0.001 (YAML 1.1, PyYAML's default, reads it as a string).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..data.factory import DATASET_NAMES

LR_SCHEDULES = ("step", "multistep", "cosine", "constant")
OPTIMIZERS = ("sgd", "adamw")
AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_RECIPE = "quickstart"


@dataclass
class TrainConfig:
    """Everything a training run depends on. Learning rate and batch size are for the whole run,
    summed over all processes (``batch_size`` 128 on 8 GPUs is 16 images per GPU)."""

    # --- what to train
    recipe: str = DEFAULT_RECIPE  # the recipe name, recorded for the run's name and logs
    model: str = "aff3d_resnet20_cifar"  # any name of torch_impl.list_models()
    model_kwargs: dict = field(default_factory=dict)  # extra create_model options, e.g. {reduction: 4}
    # --- data
    dataset: str = "shapes"  # shapes | cifar100 | imagenet
    data_dir: str | None = None  # cifar100: the cifar-100-python folder or its parent; imagenet: holds train/, val/
    download: bool = False  # cifar100 only: fetch the official archive if missing
    image_size: int = 32  # shapes: image side; imagenet: crop size; cifar100: always 32
    train_samples: int | None = None  # shapes only: training set size (default 10,000)
    val_samples: int | None = None  # shapes only: validation set size (default 2,000)
    data_seed: int | None = 0  # shapes only: the generator seed of the data set itself; None: the run's seed
    workers: int | None = None  # data-loader processes per training process; None: 0 on <= 2 cores, else up to 8
    # --- optimisation
    epochs: int = 4
    batch_size: int = 128
    eval_batch_size: int | None = None  # default: 2 x batch_size
    eval_every: int = 1  # validate every k epochs and always at the last: on a large validation set that
    # measurement can cost as much as the training epoch, and skipping it changes no trained weight
    steps_per_epoch: int | None = None  # cap the steps of each epoch (smoke tests); None: the whole set
    optimizer: str = "sgd"  # sgd (the paper's) | adamw (quick runs from scratch)
    lr: float = 0.1
    momentum: float = 0.9  # sgd only
    nesterov: bool = False
    weight_decay: float = 1e-4
    lr_schedule: str = "step"  # step (x lr_gamma every lr_step_size epochs) | multistep | cosine | constant
    lr_step_size: int = 30
    lr_milestones: list = field(default_factory=lambda: [0.5, 0.75])  # multistep: fractions of `epochs`
    lr_gamma: float = 0.1
    warmup_steps: int = 0  # optimizer steps at `warmup_lr` before the schedule starts
    warmup_lr: float = 0.01
    label_smoothing: float = 0.0
    # --- speed
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16 (fp16 uses a GradScaler)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)
    threads: int | None = None  # torch.set_num_threads per process; None: torch's default
    # --- reproducibility
    seed: int = 0
    deterministic: bool = True  # deterministic kernels (bit-for-bit CPU runs; slower cuDNN on GPU)
    # --- output
    output_dir: str | None = "runs"  # runs go to <output_dir>/<run_name>/; None: write nothing
    run_name: str | None = None  # default: <recipe>-<model>
    resume: str | None = None  # a checkpoint file or a run folder (its last.pth)
    stop_after_epochs: int | None = None  # end this process after that many epochs (e.g. a job time limit)
    progress: bool = True  # tqdm progress bars
    tensorboard: bool = True

    def validate(self) -> TrainConfig:
        """Raise ValueError for any value of the wrong type or out of range; return self."""
        for name in FIELDS:
            setattr(self, name, _checked_type(name, getattr(self, name)))
        _choice("dataset", self.dataset, DATASET_NAMES)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("amp", self.amp, AMP_MODES)
        _choice("device", self.device, DEVICES)
        for name in ("epochs", "batch_size", "image_size", "lr_step_size", "eval_every"):
            _positive(name, getattr(self, name))
        for name in (
            "eval_batch_size",
            "steps_per_epoch",
            "train_samples",
            "val_samples",
            "threads",
            "stop_after_epochs",
        ):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise ValueError(f"workers must be an integer >= 0 or null, got {self.workers!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("lr", "warmup_lr", "lr_gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not (0 <= self.momentum < 1 and self.weight_decay >= 0 and 0 <= self.label_smoothing < 1):
            raise ValueError(
                f"need 0 <= momentum < 1, weight_decay >= 0, 0 <= label_smoothing < 1; got {self.momentum}, "
                f"{self.weight_decay}, {self.label_smoothing}"
            )
        if not isinstance(self.lr_milestones, list) or not all(0 < m < 1 for m in self.lr_milestones):
            raise ValueError(
                f"lr_milestones must be a list of fractions of the epochs in (0, 1), got {self.lr_milestones!r}"
            )
        if self.dataset in ("cifar100", "imagenet") and not self.data_dir:
            raise ValueError(f"dataset {self.dataset!r} needs --data-dir (the folder with the data), got none")
        if self.download and self.dataset != "cifar100":
            raise ValueError(f"--download is only available for cifar100, not {self.dataset!r}")
        if "num_classes" in self.model_kwargs:
            raise ValueError(
                "model_kwargs may not set num_classes: the classifier's size comes from the data set's classes"
            )
        if self.dataset == "shapes" and self.data_dir is not None:
            raise ValueError(
                f"--data-dir {self.data_dir} does not apply to the built-in shapes data set (it is generated, "
                "see --train-samples and --data-seed); drop --data-dir, or choose --dataset cifar100 or imagenet"
            )
        if self.run_name is not None and not _is_plain_name(self.run_name):
            raise ValueError(
                f"run_name must be a plain folder name (the run is written to <output_dir>/<run_name>), got "
                f"{self.run_name!r}; use --output-dir to choose where runs go"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def resolved_data_seed(self) -> int:
        """The data set's generator seed: ``data_seed``, or the run's ``seed`` where it is None (each seed
        then draws its own images, and two runs with one seed still see the same ones)."""
        return self.seed if self.data_seed is None else self.data_seed


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _is_plain_name(name: str) -> bool:
    """One path component, not ``.`` or ``..``: it cannot lead outside the folder it is joined to."""
    return bool(name) and name not in (".", "..") and Path(name).name == name and "\\" not in name


def _checked_type(name: str, value):
    """``value`` if it has field ``name``'s type (an int for a float field becomes a float); else ValueError."""
    hint = _HINTS[name]
    allowed = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    optional = type(None) in typing.get_args(hint)
    base = allowed[0]
    if value is None and optional:
        return value
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}[base] + (" or null" if optional else "")  # fmt: skip
    hint_text = " (quoted in the YAML file? write numbers without quotes)" if isinstance(value, str) else ""
    raise ValueError(f"{name} must be {kind}, got {value!r} of type {type(value).__name__}{hint_text}")


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: ``1e-3`` and ``5E4`` are numbers, not strings."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),  # the exponent forms YAML 1.1 lacks
    list("-+0123456789"),
)


def load_yaml(text: str):
    """A recipe, or a flag's list/mapping value, read with YAML 1.2's numbers."""
    return yaml.load(text, Loader=_Yaml12Loader)


# ----------------------------------------------------------------------------- recipes


def recipe_names() -> list[str]:
    """The recipes shipped in ``torch_impl/recipes/`` (without ``.yaml``)."""
    return sorted(
        p.name[: -len(".yaml")] for p in resources.files("torch_impl.recipes").iterdir() if p.name.endswith(".yaml")
    )


def read_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """The key/values of a shipped recipe (by name) or of a YAML file (by path)."""
    text, where = None, str(name_or_path)
    if str(name_or_path) in recipe_names():
        text = resources.files("torch_impl.recipes").joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"recipe {name_or_path!r} is neither a shipped recipe {recipe_names()} nor a YAML file"
            )
        try:
            text = path.read_text(encoding="utf-8")  # YAML's encoding, whatever the locale's
        except UnicodeDecodeError as err:  # its own message names a codec and a byte, not the file
            raise ValueError(
                f"recipe {where} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
            ) from err
    try:
        values = load_yaml(text)
    except yaml.YAMLError as err:
        raise ValueError(f"recipe {where} is not valid YAML: {err}") from err
    if values is None:  # no bytes, or only comments: most likely not the file that was meant
        raise ValueError(f"recipe {where} is empty: expected a mapping of recipe keys to values, e.g. 'epochs: 10'")
    if not isinstance(values, dict):
        raise ValueError(f"recipe {where}: expected a mapping of keys to values, got {type(values).__name__}")
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"recipe {where}: unknown key(s) {unknown}; valid keys: {sorted(FIELDS)}")
    return values


def make_config(recipe: str | Path | Mapping | TrainConfig | None = None, **overrides) -> TrainConfig:
    """A validated config: defaults <- recipe (name, path, mapping or config) <- ``overrides``."""
    if isinstance(recipe, TrainConfig):
        values = recipe.to_dict()
    elif isinstance(recipe, Mapping):
        values = dict(recipe)
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {sorted(FIELDS)}")
    else:
        name = DEFAULT_RECIPE if recipe is None else recipe
        values = read_recipe(name)
        values.setdefault("recipe", Path(str(name)).stem)
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {sorted(FIELDS)}")
    values.update(overrides)
    return TrainConfig(**values).validate()


# ----------------------------------------------------------------------------- command line


def _parse_value(name: str):
    """The argparse ``type`` for field ``name``: YAML for lists and dicts, int/float/str otherwise."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]

    def parse(text: str):
        if text.lower() in ("none", "null") and type(None) in typing.get_args(hint):
            return None
        if base in (list, dict):
            try:
                value = load_yaml(text)
            except yaml.YAMLError:
                value = None
            if not isinstance(value, base):
                raise argparse.ArgumentTypeError(f"expected a YAML {base.__name__}, got {text!r}")
            return value
        try:  # int, float or str (booleans have --flag / --no-flag instead)
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {base.__name__}, got {text!r}") from None

    parse.__name__ = base.__name__
    return parse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig field (``--x/--no-x`` for booleans), all defaulting to "not given"."""
    parser.add_argument(
        "--recipe", default=None, help=f"a shipped recipe {recipe_names()} or a YAML file (default: {DEFAULT_RECIPE})"
    )
    group = parser.add_argument_group("recipe overrides (every recipe key)")
    for name, spec in FIELDS.items():
        if name == "recipe":
            continue
        flag = "--" + name.replace("_", "-")
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        if _HINTS[name] is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        else:
            group.add_argument(
                flag,
                dest=name,
                type=_parse_value(name),
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=f"(default {default!r})",
            )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {k: v for k, v in vars(args).items() if k in FIELDS and k != "recipe"}
    return make_config(args.recipe, **overrides)
