"""Exact replacements for the CPU kernels that no environment setting pins (spt/numerics.py).

float32 ``torch.sqrt`` on CPU runs through MKL's vector-maths library, which is not correctly
rounded and picks its code path by CPU (measured on 20,000 values: 3,704 differ from the
correctly rounded root on an AVX-512 Xeon, 3,316 under emulated Haswell and EPYC, whatever
``MKL_CBWR`` says). SAM calls it in every ``LayerNorm2d`` (image-encoder neck, mask downscaling,
mask-decoder upscaling), so it alone makes training differ across CPUs.

:func:`exact_sqrt` computes the correctly rounded root instead (its gradient flows through
float64, also the same on every CPU).
:func:`use_exact_kernels` switches a built SAM's ``LayerNorm2d`` modules to it in place,
keeping segment_anything's module, parameters and state-dict keys (SAM's code is not copied).
"""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


def exact_sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded ``sqrt`` of a CPU float32/float16/bfloat16 tensor, with autograd.

    The root is taken in float64 and rounded once to ``x``'s dtype. A float32 root is never
    within 2**-50 (relative) of a rounding midpoint, far more than float64's error, so the
    result is the correctly rounded root whatever float64 kernel the CPU runs (measured: no
    difference from NumPy's IEEE root on 20,000 values, natively and under emulated Haswell,
    EPYC and Nehalem). It works under ``torch.func.vmap``, which the pretraining uses. Other
    devices and float64 keep ``torch.sqrt`` (CUDA's float32 sqrt is IEEE-exact already).
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.sqrt(x.double()).to(x.dtype)
    return torch.sqrt(x)


class ExactLayerNorm2d(LayerNorm2d):
    """segment_anything's LayerNorm2d with the square root computed by :func:`exact_sqrt`;
    the same arithmetic otherwise, in the same order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / exact_sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def use_exact_kernels(model: nn.Module) -> nn.Module:
    """Switch every ``LayerNorm2d`` in ``model`` to :class:`ExactLayerNorm2d` (in place;
    parameters, hooks and state-dict keys stay); returns ``model``."""
    for module in model.modules():
        if type(module) is LayerNorm2d:
            module.__class__ = ExactLayerNorm2d
    return model
