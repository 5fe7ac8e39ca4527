"""Which configs the comparison trains, and what makes two runs comparable (their budget).

The YAML files are read without detectron2 (``_BASE_`` chains merged as detectron2 merges them:
later keys win, nested mappings merge), so the runner, the report and the tests work without it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "shapes"
COMPARISON = "docs/results/experiments/detection/comparison"  # the results: one i<iterations>/ folder per schedule

# config name -> (paper's row label in Tables 8/9, MODEL.AFF3D.ATTENTION), the five backbones in the
# tables' order: the attention names are the keys of torch_impl.attention's table ("none" is
# detectron2's own ResNet), the labels are printed as the paper prints them (CBAM-50, ECANet-50).
BACKBONES: dict[str, tuple[str, str]] = {
    "R_50": ("ResNet-50", "none"),
    "SE_R_50": ("SE-ResNet-50", "se"),
    "CBAM_R_50": ("CBAM-50", "cbam"),
    "ECA_R_50": ("ECANet-50", "eca"),
    "AFF3D_R_50": ("3D-AFF-ResNet-50", "aff3d"),
}
DETECTORS: dict[str, str] = {"mask_rcnn": "Mask R-CNN", "faster_rcnn": "Faster R-CNN"}
# Seeds per backbone and detector at the full schedule: three for the paper's headline rows, whose
# contrasts are the question, two for CBAM and ECA (the runner's default; --seeds N sets one count for all).
SEEDS: dict[str, int] = {"R_50": 3, "SE_R_50": 3, "CBAM_R_50": 2, "ECA_R_50": 2, "AFF3D_R_50": 3}

# Keys that name a run or say where and how often it saves, rather than change what it learns.
PER_RUN_KEYS = (("MODEL", "AFF3D", "ATTENTION"), ("SEED",), ("OUTPUT_DIR",), ("SOLVER", "CHECKPOINT_PERIOD"))


def config_path(detector: str, backbone: str) -> Path:
    return CONFIG_DIR / f"{detector}_{backbone}_FPN_shapes.yaml"


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config_chain(path: Path) -> dict[str, Any]:
    """The YAML at ``path`` merged onto its ``_BASE_`` chain (the keys the files set, not detectron2's defaults)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    return _merge(load_config_chain(Path(path).parent / base), data)


def set_key(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """``KEY VALUE`` from the command line, as text parsed like a YAML scalar (detectron2 uses literal_eval)."""
    *parents, last = dotted.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value) if isinstance(value, str) else value


def schedule_opts(detector: str, scale: float) -> list[str]:
    """``KEY VALUE`` pairs that train ``scale`` times the config's iterations, its lr steps, evaluations
    and checkpoints at the same fractions of the run (the warm-up stays): the schedule-halving check."""
    if not scale > 0:
        raise ValueError(f"a schedule scale must be positive, got {scale}")
    solver, test = (load_config_chain(config_path(detector, "R_50")).get(k, {}) for k in ("SOLVER", "TEST"))
    steps = yaml.safe_load(str(solver["STEPS"]).replace("(", "[").replace(")", "]"))
    scaled = lambda n: max(1, round(n * scale))  # noqa: E731
    return ["SOLVER.MAX_ITER", str(scaled(solver["MAX_ITER"])),
            "SOLVER.STEPS", "(" + ", ".join(str(scaled(s)) for s in steps) + ")",
            "TEST.EVAL_PERIOD", str(scaled(test["EVAL_PERIOD"])),
            # no longer apart than the config's: a longer run loses no more to an interruption
            "SOLVER.CHECKPOINT_PERIOD", str(min(scaled(solver["CHECKPOINT_PERIOD"]), solver["CHECKPOINT_PERIOD"]))]  # fmt: skip


def budget_of_config(detector: str, backbone: str, opts: list[str] = ()) -> dict[str, Any]:
    """What one run learns from, less the per-run keys: equal for every backbone of a detector."""
    cfg = load_config_chain(config_path(detector, backbone))
    for dotted, value in zip(opts[::2], opts[1::2]):
        set_key(cfg, dotted, value)
    for path in PER_RUN_KEYS:
        node = cfg
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return cfg


def default_out(detector: str, opts: list[str] = ()) -> Path:
    """``<COMPARISON>/i<N>``, N the iterations the config and ``opts`` give (a halving run's folder is i<N/2>)."""
    return Path(COMPARISON) / f"i{budget_of_config(detector, 'R_50', opts)['SOLVER']['MAX_ITER']}"
