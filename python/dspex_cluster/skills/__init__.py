"""Numpy skills: anomaly detection, failure prediction, placement and load forecasting."""
