"""``python -m torch_impl.benchmark``: see the package's docstring, or ``--help``."""

from .cli import main

if __name__ == "__main__":
    main()
