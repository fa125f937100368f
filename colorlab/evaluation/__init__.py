"""Evaluation protocols of published papers, selected by ``evaluate.protocol``."""
