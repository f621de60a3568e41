"""Representation analysis: CKA (cka.py, layerwise.py), plots, and statistics (stats.py)."""
