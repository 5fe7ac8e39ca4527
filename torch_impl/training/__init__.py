"""Classification training: recipes, the training loop, checkpoints, torchrun, metrics and curves.

from torch_impl.training import run, plot_curves
results = {name: run("quickstart", model=name, epochs=3, output_dir=None, progress=False)
           for name in ("resnet20_cifar", "se_resnet20_cifar", "aff3d_resnet20_cifar")}
plot_curves({name: r.history for name, r in results.items()})
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, make_config, read_recipe, recipe_names
from .curves import plot_curves
from .log import read_csv
from .runner import RunResult, run, summary_line

__all__ = [
    "RunResult",
    "TrainConfig",
    "load_checkpoint",
    "make_config",
    "plot_curves",
    "read_csv",
    "read_recipe",
    "recipe_names",
    "run",
    "save_checkpoint",
    "summary_line",
]
