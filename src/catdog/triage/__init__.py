"""Triage: why a trained model fails, and whether it is the model or the data.

One module per job, orchestrated by :mod:`catdog.triage.pipeline`:
:mod:`~catdog.triage.settings` (the config, parsed once), :mod:`~catdog.triage.features` (the
embedding pass on the Lightning prediction engine), :mod:`~catdog.triage.folds` (K-fold out-of-sample
heads), :mod:`~catdog.triage.label_issues` (cleanlab; relabelled.csv), :mod:`~catdog.triage.duplicates`
(exact and near duplicates, leaks, label conflicts, outliers), :mod:`~catdog.triage.slices` (failure
slices), :mod:`~catdog.triage.pictures` (maps of the images the tables point at) and
:mod:`~catdog.triage.report` (the report page).
"""
