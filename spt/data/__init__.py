"""Datasets: native-layout readers, the prepared manifest, the split and synthetic twins."""
