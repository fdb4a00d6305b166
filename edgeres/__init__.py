"""edgeres: an edge deployment compiler for ResNet image classifiers."""

__version__ = "0.1.0"
