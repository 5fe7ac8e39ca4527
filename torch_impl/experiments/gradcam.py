"""Table 7 measured: where do the trained networks look? Grad-CAM highlight vs the object's mask.

    python -m torch_impl.experiments.gradcam [--seeds 0,1,2] [--rows resnet,se,aff3d]

The paper shows Grad-CAM images (Table 7) and reads them as "3D-AFF covers the object better". The
built-in shapes images come with the object's pixel mask, so the claim can be measured over the whole
validation set. For each trained network (best checkpoint of the grid run of each seed), Grad-CAM
(Selvaraju et al. 2017; the ``grad-cam`` package) on the last block of layer3, for the predicted class,
upsampled to the image, scaled to [0, 1] per image. Per image:

* energy in object: the share of the map's mass inside the mask, ``sum(cam * mask) / sum(cam)``;
* pointing game: 1 when the map's peak lies inside the mask;
* IoU: of the highlighted area (``cam >= 0.5``) with the mask;
* highlighted area: the share of the image the map highlights (``cam >= 0.5``): the paper's own reading
  of Table 7 is that 3D-AFF highlights a larger region, and this is that size, measured.

Per seed: the mean over the images with its 95 % t-interval; across seeds: the mean of the seed means
with its t-interval, and the paired difference to the SE network (same seeds). A uniform map scores
the object's area fraction on the first two (the "chance" line). Where each seed drew its own images
(``data_seed: null`` in the budget), each seed is measured on its own validation images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..data.shapes import SHAPE_CLASSES, ShapesClassification
from ..data.transforms import build_transform
from ..models import create_model
from ..training.checkpoint import BEST, load_checkpoint
from .grids import get_grid, run_key, variant_of
from .stats import paired_difference, summarize
from .store import machine_info, versions, write_json_atomic

METRICS = ("energy_in_object", "pointing_game", "iou", "highlight_area")


def per_image_scores(cam: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """``cam`` (N, H, W) in [0, 1], ``masks`` (N, H, W) bool -> one score per image for each metric."""
    m = masks.astype(np.float64)
    energy = (cam * m).sum(axis=(1, 2)) / np.maximum(cam.sum(axis=(1, 2)), 1e-12)
    peak = cam.reshape(len(cam), -1).argmax(axis=1)
    hit = m.reshape(len(m), -1)[np.arange(len(m)), peak]
    high = cam >= 0.5
    iou = (high & masks).sum(axis=(1, 2)) / np.maximum((high | masks).sum(axis=(1, 2)), 1)
    return {"energy_in_object": energy, "pointing_game": hit, "iou": iou, "highlight_area": high.mean(axis=(1, 2))}


def load_network(path: Path) -> tuple[torch.nn.Module, dict]:
    state = load_checkpoint(path)
    net = create_model(state["model_name"], num_classes=state["num_classes"], **state["model_kwargs"])
    net.load_state_dict(state["model"])
    return net.eval(), state


def gradcam_maps(net: torch.nn.Module, x: torch.Tensor, batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """(Grad-CAM maps for the predicted class (N, H, W) in [0, 1], predictions (N,))."""
    from pytorch_grad_cam import GradCAM

    cams, preds = [], []
    with GradCAM(model=net, target_layers=[net.layer3[-1]]) as cam:
        for i in range(0, len(x), batch):
            xb = x[i : i + batch]
            with torch.no_grad():
                preds.append(net(xb).argmax(1).numpy())
            cams.append(cam(input_tensor=xb, targets=None))  # None: the highest-scoring (predicted) class
    return np.concatenate(cams), np.concatenate(preds)


def slim_checkpoint(state: dict, path: Path) -> None:
    """The network part of a checkpoint (no optimizer): loadable with ``load_checkpoint`` and ``load_network``."""
    keep = ("format", "model_name", "model_kwargs", "num_classes", "model", "epoch", "config", "history", "classes")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: state[k] for k in keep if k in state}, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m torch_impl.experiments.gradcam", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--results", default="docs/results/experiments/table1/results.json", help="a grid's results")
    p.add_argument("--runs", default="runs/experiments", help="run folders (their best.pth)")
    p.add_argument("--rows", default="resnet,se,aff3d", help="row keys of the grid to measure")
    p.add_argument("--seeds", default="0,1,2", help="seeds to measure")
    p.add_argument("--out", default="docs/results/experiments/gradcam", help="output folder")
    p.add_argument("--checkpoints", default="docs/results/experiments/checkpoints",
                   help="where the slim seed-0 checkpoints are copied ('' for none)")  # fmt: skip
    p.add_argument("--show", type=int, default=8, help="validation images in the picture")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        data = json.loads(Path(args.results).read_text())
        grid = get_grid(data["grid"])
        rows = [grid.row(k) for k in args.rows.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    budget = data["budget"]
    runs = Path(args.runs) / data["budget_id"]
    val_sets: dict[int, tuple] = {}

    def validation(seed: int) -> tuple:
        """(images, labels, masks, network input) of the validation images seed ``seed`` was measured on."""
        data_seed = seed if budget.get("data_seed") is None else budget["data_seed"]
        if data_seed not in val_sets:
            val = ShapesClassification("val", size=budget["image_size"], length=budget["val_samples"], seed=data_seed)
            images, labels, masks = zip(*(val.sample(i) for i in range(len(val))))
            to_input = build_transform("shapes", train=False)
            x = torch.stack([to_input(img) for img in images])
            val_sets[data_seed] = (images, np.array(labels), np.stack(masks), x)
        return val_sets[data_seed]

    images, labels, masks, x = validation(seeds[0])
    object_area = np.mean([validation(s)[2].mean() for s in seeds])  # each seed's images: the chance level

    out: dict = {"method": "Grad-CAM on layer3[-1], predicted class, upsampled, per-image [0, 1]",
                 "checkpoint": BEST, "grid": grid.name, "budget_id": data["budget_id"], "budget": budget,
                 "images": len(x), "uniform_map": {"energy_in_object": float(object_area),
                                                   "pointing_game": float(object_area)},
                 "rows": {}, "machine": machine_info(), "versions": versions()}  # fmt: skip
    seed_means: dict[str, dict[str, dict[int, float]]] = {}
    shown = {}
    for row in rows:
        variant = variant_of(row, budget["backbone"])
        per_seed = {}
        seed_means[row.key] = {m: {} for m in METRICS + ("accuracy",)}
        for seed in seeds:
            path = runs / run_key(variant, seed) / BEST
            if not path.exists():
                print(f"skipping {row.key} seed {seed}: no {path}", file=sys.stderr)
                continue
            net, state = load_network(path)
            images, labels, masks, x = validation(seed)
            cam, pred = gradcam_maps(net, x)
            scores = per_image_scores(cam, masks)
            correct = pred == labels
            entry = {"epoch": int(state["epoch"]), "accuracy": float(correct.mean())}
            for m, values in scores.items():
                entry[m] = summarize(values.tolist()).to_dict()
                entry[m + "_correct"] = float(values[correct].mean()) if correct.any() else None
                entry[m + "_wrong"] = float(values[~correct].mean()) if (~correct).any() else None
                seed_means[row.key][m][seed] = float(values.mean())
            seed_means[row.key]["accuracy"][seed] = float(correct.mean())
            per_seed[str(seed)] = entry
            if seed == seeds[0]:
                shown[row.symbol] = (cam[: args.show], pred[: args.show])
                if args.checkpoints:
                    slim_checkpoint(state, Path(args.checkpoints) / f"{row.key}_seed{seed}.pth")
        across = {m: summarize(list(v.values())).to_dict() for m, v in seed_means[row.key].items() if v}
        out["rows"][row.key] = {"symbol": row.symbol, "label": row.label, "model": variant.model,
                                "model_kwargs": variant.options, "per_seed": per_seed, "across_seeds": across}  # fmt: skip
    if "se" in seed_means:
        for key, means in seed_means.items():
            if key != "se":
                diffs = {m: paired_difference(means[m], seed_means["se"][m]) for m in METRICS}
                out["rows"][key]["paired_difference_to_se"] = {m: d.to_dict() for m, d in diffs.items() if d}
    write_json_atomic(Path(args.out) / "results.json", out)
    images, labels, masks, _ = validation(seeds[0])  # the picture shows the first seed's images
    picture(images[: args.show], labels[: args.show], masks[: args.show], shown, Path(args.out) / "gradcam.png")
    for key, row in out["rows"].items():
        a = row["across_seeds"]
        print(f"{key}: " + ", ".join(f"{m} {a[m]['mean']:.3f} [{a[m]['ci_low']:.3f}, {a[m]['ci_high']:.3f}]"
                                     for m in METRICS + ("accuracy",) if m in a))  # fmt: skip
    return 0


def picture(images, labels, masks, shown: dict, path: Path) -> None:
    """Input row, then one row per network: Grad-CAM over the image, predicted class, right/wrong marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(1 + len(shown), n, figsize=(1.7 * n + 1, 1.9 * (1 + len(shown))), squeeze=False)
    im = None
    for j in range(n):
        axes[0, j].imshow(images[j])
        axes[0, j].contour(masks[j], levels=[0.5], colors="white", linewidths=0.8)
        axes[0, j].set_title(f"true: {SHAPE_CLASSES[labels[j]]}", fontsize=8)
        for r, (symbol, (cam, pred)) in enumerate(shown.items(), start=1):
            ax = axes[r, j]
            ax.imshow(images[j], alpha=1.0)
            im = ax.imshow(cam[j], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.contour(masks[j], levels=[0.5], colors="white", linewidths=0.8)
            right = pred[j] == labels[j]
            ax.set_title(("✓ " if right else "✗ ") + SHAPE_CLASSES[pred[j]], fontsize=8,
                         color="green" if right else "red")  # fmt: skip
            for side in ax.spines.values():
                side.set_edgecolor("green" if right else "red")
                side.set_linewidth(2)
    from .report import math_label

    for r, name in enumerate(["input (mask outline)", *shown]):
        axes[r, 0].set_ylabel(math_label(name), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes[1:, :].ravel().tolist(), shrink=0.8, label="Grad-CAM (predicted class)")
    fig.suptitle("Grad-CAM on the validation images: title = predicted class (✓ right, ✗ wrong)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
