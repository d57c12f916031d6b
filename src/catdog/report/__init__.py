"""A browsable HTML report of one or several explain folders: ``report/index.html`` plus its pictures.

The folder is self-contained: one HTML file with inline CSS and JavaScript (no CDN, no server, no
network) and the pictures it shows, either copied into ``assets/`` or, for files that live in the
folder's parent (an explain folder's own overlays), referenced relatively. Open it from disk or serve
it statically.

Layout: a summary at the top (one row per experiment, pairwise agreement when there are several,
confusion matrices and training curves), then a gallery of every image with filters and sorting, and a
per-image view with all experiments side by side at full size.

Safety: every user-supplied string (file names, class names, labels) is HTML-escaped in the static
part; the gallery data is embedded as JSON that cannot close its ``<script>`` element, and the
JavaScript only ever writes it with ``textContent``, so a file named ``<img src=x onerror=...>.jpg``
shows as text.

Modules, one job each:
    experiments  the read model of an explain folder (:class:`Experiment`, predictions.csv, summary.json)
    tables       the numbers (experiment table, map-quality totals, confidence)
    assets       the files shown (relative links, copies, thumbnails, confusion matrices, curves)
    gallery      the per-image JSON records report.js renders
    sections     the static HTML sections, each a function returning escaped HTML
    page         ``write_report``: the folder and index.html (template and CSS/JS in ``static/``)
"""

from catdog.report.assets import overlay_file
from catdog.report.experiments import (
    Experiment,
    read_explain_dir,
    read_predictions,
    restrict_to_paths,
)
from catdog.report.gallery import script_json
from catdog.report.page import write_report
from catdog.report.tables import (
    MAP_QUALITY_HEADS,
    PER_IMAGE_METRICS,
    confidence,
    experiment_table,
    pair_column,
)

__all__ = [
    "MAP_QUALITY_HEADS",
    "PER_IMAGE_METRICS",
    "Experiment",
    "confidence",
    "experiment_table",
    "overlay_file",
    "pair_column",
    "read_explain_dir",
    "read_predictions",
    "restrict_to_paths",
    "script_json",
    "write_report",
]
