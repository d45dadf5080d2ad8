"""Classification and wake-word metrics on numpy arrays (torch-free, shared by eval and the simulator)."""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def per_class(cm: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for i, name in enumerate(labels):
        tp = cm[i, i]
        support = cm[i].sum()
        predicted = cm[:, i].sum()
        out[name] = {
            "precision": float(tp / predicted) if predicted else 0.0,
            "recall": float(tp / support) if support else 0.0,
            "support": int(support),
        }
    return out


def wake_curve(pos_scores: np.ndarray, neg_scores: np.ndarray) -> dict[str, np.ndarray]:
    """False-reject and false-accept rates at every distinct threshold (score >= t accepts)."""
    thresholds = np.unique(np.concatenate([pos_scores, neg_scores, [0.0, 1.0 + 1e-9]]))
    pos = np.sort(pos_scores)
    neg = np.sort(neg_scores)
    frr = np.searchsorted(pos, thresholds, side="left") / max(1, len(pos))
    # Counted, then divided once: 1 - 99/100 is 0.010000000000000009 in floating point, which would
    # refuse one false accept in 100 negatives at a 1 % target.
    far = (len(neg) - np.searchsorted(neg, thresholds, side="left")) / max(1, len(neg))
    return {"threshold": thresholds, "frr": frr, "far": far}


def recall_at_far(pos_scores: np.ndarray, neg_scores: np.ndarray, target_far: float) -> tuple[float, float]:
    """Best recall with false-accept rate <= target; returns (recall, threshold). With no positives
    there is nothing to recall: (0.0, 1.0), never a perfect score."""
    if len(pos_scores) == 0:
        return 0.0, 1.0
    curve = wake_curve(pos_scores, neg_scores)
    ok = curve["far"] <= target_far
    if not ok.any():
        return 0.0, 1.0
    i = int(np.argmin(np.where(ok, curve["frr"], np.inf)))
    return float(1.0 - curve["frr"][i]), float(curve["threshold"][i])


def classification_report(
    logits: np.ndarray,
    y: np.ndarray,
    labels: list[str],
    positive_label: str | None,
    *,
    threshold: float = 0.5,
    target_far: float = 0.01,
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall, confusion matrix and (for wake words) FRR/FAR."""
    pred = logits.argmax(axis=1)
    cm = confusion_matrix(y, pred, len(labels))
    report: dict[str, Any] = {
        "num_clips": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "per_class": per_class(cm, labels),
        "confusion_matrix": cm.tolist(),
        "labels": labels,
    }
    if positive_label is not None and positive_label in labels:
        k = labels.index(positive_label)
        scores = softmax(logits)[:, k]
        pos, neg = scores[y == k], scores[y != k]
        curve = wake_curve(pos, neg)
        recall, thr = recall_at_far(pos, neg, target_far)
        report["wake_word"] = {
            "positive_label": positive_label,
            "threshold": threshold,
            "frr": float((pos < threshold).mean()) if len(pos) else 0.0,
            "far": float((neg >= threshold).mean()) if len(neg) else 0.0,
            "target_far": target_far,
            "recall_at_target_far": recall,
            "threshold_at_target_far": thr,
            "curve": {k2: v.tolist() for k2, v in curve.items()},
        }
    return report
