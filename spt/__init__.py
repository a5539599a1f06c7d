"""SPT reproducibility suite: promptable industrial anomaly segmentation with SAM."""

__version__ = "0.1.0"
