"""SPT reproducibility suite: promptable industrial anomaly segmentation with SAM."""

# First, before anything imports torch or NumPy: pin the CPU numerics of this process and of
# every process it starts ($SPT_NUMERICS=portable by default; see spt/numerics.py).
from spt import numerics as _numerics

_numerics.configure_process()

__version__ = "0.1.0"
