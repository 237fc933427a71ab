"""Pruning and deploy conversion: importance, channel slicing, iterative schedules, reparameterization."""
