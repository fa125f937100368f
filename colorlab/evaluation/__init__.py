"""Evaluation protocols of published papers (``evaluate.protocol``) and the metric networks they need
(weights from a path, torch hub's cache or random)."""
