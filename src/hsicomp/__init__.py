"""hsicomp: learned and classical compression of hyperspectral images."""

__version__ = "0.1.0"
