"""Benchmarks run on CPU with a fixed thread count so ratios are comparable between runs."""

import torch

torch.set_num_threads(2)
