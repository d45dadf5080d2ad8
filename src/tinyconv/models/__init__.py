"""Student models: registry and TinyConv V1/V2."""

from tinyconv.models import streaming as _streaming  # noqa: F401  (registers stream_tinyconv*)
from tinyconv.models import tinyconv as _tinyconv  # noqa: F401  (registers the models)
from tinyconv.models.registry import build_model, create_model, list_models, register_model
from tinyconv.models.tinyconv import ConvBNReLU, TinyConvWakeword

__all__ = ["ConvBNReLU", "TinyConvWakeword", "build_model", "create_model", "list_models", "register_model"]
