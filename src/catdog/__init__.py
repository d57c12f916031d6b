"""catdog: train an image classifier with Lightning + Hydra, then explain it with CAMs."""

__version__ = "0.1.0"
