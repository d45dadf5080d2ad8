"""tinyconv: wake-word and keyword-spotting models for microcontrollers, with proof they fit."""

__version__ = "0.1.0"
