"""Torch-free code shared by export and firmware_sim: runtimes, arena measurement, the ESPHome detector.

Everything here imports numpy and the native runtimes only (never torch), so that the firmware
simulator, which must run without torch on exported files, and the exporter use one
implementation of what the device does.
"""
