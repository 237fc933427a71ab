"""Pruning and compaction: importance, channel slicing, dependency groups, compact EDSRmini/SwinIRmini, DIPNet
filter pruning. The deploy runtime (inference, tiling, export, conversion) lives in :mod:`ddsr.deploy`."""
