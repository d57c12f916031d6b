"""The numbers of summary.json and the short console summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["print_summary", "summarise"]


def summarise(
    table: pd.DataFrame,
    issues: pd.DataFrame,
    pairs: pd.DataFrame,
    outliers: pd.DataFrame,
    slices: pd.DataFrame,
    settings: Any,
) -> dict[str, Any]:
    """Counts for summary.json (the tables hold the details)."""
    labelled = table["correct"].notna()
    below = slices[slices["below_average"].astype(bool)] if len(slices) else slices
    return {
        "images": len(table),
        "labelled": int(labelled.sum()),
        "splits": {str(k): int(v) for k, v in table["split"].value_counts().items()},
        "prob_sources": {str(k): int(v) for k, v in table["prob_source"].value_counts().items()},
        "accuracy": round(float(table.loc[labelled, "correct"].astype(float).mean()), 6) if labelled.any() else None,
        "label_issues": {
            "count": len(issues),
            "by_split": {str(k): int(v) for k, v in issues["split"].value_counts().items()} if len(issues) else {},
            "top": issues.head(10)[["key", "split", "given", "suggested", "label_quality"]].to_dict("records"),
            "method": f"cleanlab find_label_issues(filter_by={settings.filter_by}), ranked by self-confidence",
            "fix": settings.fix,
        },
        "duplicates": {
            "pairs": len(pairs),
            "exact": int(pairs["exact"].sum()) if len(pairs) else 0,
            "cross_split": int(pairs["cross_split"].sum()) if len(pairs) else 0,
            "leaks": int(pairs["leak"].sum()) if len(pairs) else 0,
            "label_conflicts": int(pairs["label_conflict"].sum()) if len(pairs) else 0,
            "threshold": settings.near_duplicate,
        },
        "outliers": len(outliers),
        "slices": {"count": len(slices), "below_average": len(below), "gap": settings.slice_gap},
    }


def print_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    """A few lines: label errors (top 3 by name), duplicates and leaks, slices, where the report is."""
    issues, dup, slices = summary["label_issues"], summary["duplicates"], summary["slices"]
    lines = [f"Triaged {summary['images']} images ({summary['skipped']} skipped) in {out_dir}"]
    if summary.get("labels_note"):
        lines.append(f"  label issues: not searched ({summary['labels_note']})")
    else:
        top = ", ".join(f"{r['key']} ({r['given']} -> {r['suggested']})" for r in issues["top"][:3])
        lines.append(f"  suspected label errors: {issues['count']}" + (f"; worst: {top}" if top else ""))
    lines.append(
        f"  near-duplicate pairs: {dup['pairs']} ({dup['exact']} exact), {dup['cross_split']} across splits "
        f"({dup['leaks']} leaks), {dup['label_conflicts']} with different labels; outliers: {summary['outliers']}"
    )
    test = summary.get("test_accuracy")
    if test and test["leaked_images"]:
        without = test["accuracy_without_leaked"]
        rest = f"{without:.2%} without" if without is not None else "no test image left without"
        lines.append(f"  test accuracy {test['accuracy']:.2%}, {rest} its {test['leaked_images']} leaked image(s)")
    lines.append(f"  slices below average accuracy: {slices['below_average']} of {slices['count']} (slices.csv)")
    lines.append(f"  relabelled.csv: train on it with data=csv data.manifest={out_dir / 'relabelled.csv'}")
    lines.append(f"  open {out_dir / 'report' / 'index.html'} in a browser")
    print("\n".join(lines))
