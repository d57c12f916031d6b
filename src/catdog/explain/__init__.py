"""The explain stage: checkpoint -> one batched pass -> predictions, maps, overlays, report.

- :mod:`~catdog.explain.settings`: conf/explain.yaml read and checked once (a frozen dataclass tree).
- :mod:`~catdog.explain.model`: the model of ``ckpt=``, its provenance, BatchNorm folding for inference.
- :mod:`~catdog.explain.methods`: the explainers of a loaded model and where their map cells sit.
- :mod:`~catdog.explain.engine`: Lightning prediction over the images, per-rank shards and their merge.
- :mod:`~catdog.explain.render`: overlays and per-image rows (drawn by background writers), run pictures.
- :mod:`~catdog.explain.grids`, :mod:`~catdog.explain.top_losses`: the methods x layers grid, top_losses.png.
- :mod:`~catdog.explain.summary`: summary.json, assembled in one place, and the printed totals.
- :mod:`~catdog.explain.pipeline`: ``explain(cfg)``, the orchestration of the above.
"""
