"""Metrics: ROC, bootstrap intervals, epsilon lower bounds, precision, accuracy."""
