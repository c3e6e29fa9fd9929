"""The evaluation/prediction dataset over real multi-focus benchmarks (one item per scene).

It lives in :mod:`mfif.scenes` (with scene discovery; torch-only, so the inference tools can use it
without the DataModules); this name is kept for the DataModules and existing imports.
"""
from mfif.scenes import BenchmarkDataset

__all__ = ["BenchmarkDataset"]
