"""frankenlm: build and study frankenmodels assembled from the frozen layers of trained LMs."""

__version__ = "0.1.0"
