"""The device frontend: exactly the features TFLite Micro firmware computes. Imports no torch."""

from tinyconv.features.frontend import (
    FeatureCache,
    StreamingFrontend,
    clip_features,
    features_to_int8,
    fit_clip,
    frontend_key,
)

__all__ = ["FeatureCache", "StreamingFrontend", "clip_features", "features_to_int8", "fit_clip", "frontend_key"]
