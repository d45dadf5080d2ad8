"""Datasets: offline TTS synthesis, Speech Commands folders, robust audio loading, augmentation."""
