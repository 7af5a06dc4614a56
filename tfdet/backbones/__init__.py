"""Backbones: feature extractors shared by detectors."""
