"""Fused kernels for the 3D-AFF fast path: Triton on CUDA, with a PyTorch specification for every device."""

from .gate import gate_backward, gate_backward_torch, gate_forward, gate_forward_torch, triton_enabled

__all__ = ["gate_forward", "gate_backward", "gate_forward_torch", "gate_backward_torch", "triton_enabled"]
