"""CLMR contrastive pretraining of the encoders (SimCLR projector, NT-Xent, batched augmentations)."""
