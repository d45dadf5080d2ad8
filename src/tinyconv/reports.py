"""Plots and Markdown for evaluation results (torch-free; matplotlib with the Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_confusion(cm: np.ndarray, labels: list[str], path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(labels), 1.0 + 0.6 * len(labels)))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_det(curve: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Clip-level DET: false-reject rate against false-accept rate over thresholds (log axes)."""
    far = np.asarray(curve["far"], dtype=float)
    frr = np.asarray(curve["frr"], dtype=float)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(np.clip(far, 1e-4, 1), np.clip(frr, 1e-4, 1), lw=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false-accept rate (fraction of negative clips)")
    ax.set_ylabel("false-reject rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "DET curve")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def wake_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Evaluation: {report.get('model', '')} on {report.get('split', '')}", "",
             f"- clips: {report['num_clips']}", f"- accuracy: {report['accuracy']:.4f}", ""]
    if "wake_word" in report:
        w = report["wake_word"]
        lines += [
            f"## Wake word `{w['positive_label']}`", "",
            f"- at threshold {w['threshold']:.2f}: false-reject rate {w['frr']:.4f}, false-accept rate {w['far']:.4f}",
            f"- recall at false-accept rate <= {w['target_far']:.3f}: {w['recall_at_target_far']:.4f} "
            f"(threshold {w['threshold_at_target_far']:.3f})", "",
        ]
    lines += ["## Per class", "", "| class | precision | recall | support |", "|---|---|---|---|"]
    for name, m in report["per_class"].items():
        lines.append(f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['support']} |")
    return "\n".join(lines) + "\n"
