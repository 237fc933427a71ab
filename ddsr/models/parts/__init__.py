"""Building blocks of ddsr's models (feature hooks, progressive schedule, iterative pruner, the self-describing
SRModel base, enhanced-HR generation). Nothing here registers with BasicSR: the registering ``*_model.py`` modules
are one level up, and :mod:`ddsr.registration` scans only that level."""
