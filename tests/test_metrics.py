"""Wake-word metrics: the false-accept rate is counted exactly at the target."""

from __future__ import annotations

import numpy as np

from tinyconv.metrics import recall_at_far, wake_curve


def test_one_false_accept_in_100_negatives_is_allowed_at_1_percent() -> None:
    neg = np.r_[np.zeros(99), 0.9]  # one negative scores 0.9
    pos = np.r_[np.full(5, 0.8), 0.95]
    assert recall_at_far(pos, neg, 0.01) == (1.0, 0.8)  # threshold 0.8 accepts exactly 1 of 100
    recall, threshold = recall_at_far(pos, neg, 0.009)  # no false accept allowed
    assert abs(recall - 1 / 6) < 1e-12 and threshold == 0.95
    neg200 = np.r_[np.zeros(198), 0.9, 0.91]
    assert recall_at_far(pos, neg200, 0.01)[0] == 1.0


def test_curve_counts_and_empty_positives() -> None:
    curve = wake_curve(np.array([0.2, 0.7]), np.array([0.1, 0.5, 0.6]))
    i = list(curve["threshold"]).index(0.6)
    assert curve["far"][i] == 1 / 3 and curve["frr"][i] == 0.5
    assert recall_at_far(np.array([]), np.array([0.1, 0.2]), 0.5) == (0.0, 1.0)
