"""The explain stage: checkpoint -> one batched pass -> predictions, maps, overlays, report.

- :mod:`~catdog.explain.pipeline`: the stage itself (``explain(cfg)``), choosing method and geometry.
- :mod:`~catdog.explain.engine`: Lightning prediction over the images, per-rank shards and their merge.
- :mod:`~catdog.explain.render`: overlays and per-image rows, drawn by background writers.
- :mod:`~catdog.explain.summary`: summary.json numbers, provenance and the printed totals.
"""
