"""Queries: the views each model is queried on, and scorers of language models."""
