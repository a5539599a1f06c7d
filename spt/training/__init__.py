"""Training pieces shared by SPT and the trained baselines: losses and data augmentations.

``losses``: the HQ-SAM point-sampled BCE + Dice loss (SPT, LoRA, adapters) and the WeSAM terms
(focal, dice, IoU-head MSE, anchor, instance contrastive). ``augment``: flips, large-scale jitter
and WeSAM's weak/strong views. ``engine``: the training loop (keyed order, per-epoch checkpoints,
exact resume, DDP). Every random choice comes from an explicitly passed generator.
"""
