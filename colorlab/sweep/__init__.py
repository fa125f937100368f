"""Offline sweeps: W&B sweep YAMLs driven by Optuna (``python -m colorlab.sweep``)."""
