"""Training recipes (YAML): ``python -m torch_impl.train --recipe <name>``; see ``torch_impl.training.config``."""
