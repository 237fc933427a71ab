"""Efficiency measurement (params, FLOPs, activations, runtime, memory) and LMDB tools."""
