"""Pretraining the tiny SAM on a synthetic natural-object domain (see docs/pretrain.md)."""
