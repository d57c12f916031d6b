"""Whether a map is right: measures of map quality.

- :mod:`~catdog.quality.localization`: pointing game and energy in the object's box or mask, and the
  summaries of every per-image measure.
- :mod:`~catdog.quality.mosaic`: the mosaic check (does each class's map land on its own tile?).
- :mod:`~catdog.quality.faithfulness`: deletion/insertion, drop/increase in confidence, sanity check.
"""
