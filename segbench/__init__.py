"""segbench: benchmark and export toolkit for image-segmentation models."""

__version__ = "0.1.0"
