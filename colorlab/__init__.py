"""colorlab: which loss formulation colourises best, and why."""

__version__ = "0.1.0"
