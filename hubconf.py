"""torch.hub entry points: one per network of ``torch_impl.list_models()``.

    model = torch.hub.load("path/to/this/repo", "aff3d_resnet50", source="local", num_classes=10)
    model = torch.hub.load("<owner>/<repo>", "aff3d_resnet164_cifar")   # from GitHub

Each entry point is ``torch_impl.create_model(name, **kwargs)``: the same options (``num_classes``,
``in_chans``, ``reduction``, ``kernel_size``, ``design``, ...). There are no published weights:
``pretrained`` is a torchvision-format state_dict or a path to one (see ``torch_impl.pretrained``).
"""

from __future__ import annotations

# Imported under private names: torch.hub.list shows every public callable as an entry point.
from torch import nn as _nn

from torch_impl import create_model as _create_model
from torch_impl import list_models as _list_models

dependencies = ["torch", "numpy"]  # checked by torch.hub before an entry point runs


def _entrypoint(name: str):
    def entrypoint(pretrained=None, **kwargs) -> _nn.Module:
        if pretrained is True:
            raise ValueError(
                f"{name}: no published weights; pass pretrained=<state_dict or path to one> (torchvision format)"
            )
        return _create_model(name, pretrained=pretrained or None, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f"``torch_impl.create_model({name!r}, pretrained, **kwargs)``; see torch_impl.models.registry."
    return entrypoint


for _name in _list_models():
    globals()[_name] = _entrypoint(_name)
