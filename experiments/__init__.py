"""Experiment configurations (``configs/*.yaml``) and runners for the paper's comparisons."""
