"""Benchmarks run on CPU with a fixed thread count so ratios are comparable between runs."""

import spt  # noqa: F401  (first: pins the numerics, spt/numerics.py)

import torch  # isort: skip

torch.set_num_threads(2)
