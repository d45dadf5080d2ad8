"""Torch-free code shared by export and firmware_sim: what runs on (or stands for) the device.

- tflite_file.py: the .tflite reader (`load_tflite`, `TfliteModel`, `OpInfo`, `live_bytes_per_op`),
  pure Python; tflite_checks.py: its structural checks, run before any native runtime sees a file
- isolate.py: native interpreters in forked children of a worker process (a crash cannot take
  the caller down); tflm_log.py: what TFLite Micro prints (the op it lacks, its allocations)
- arena.py: the host TFLite Micro arena, the number both the export manifest and `simulate` report
- runners.py: TFLite Micro, LiteRT and ONNX Runtime behind one interface
- esphome_detector.py, esphome_features.py: ESPHome micro_wake_word's detector loop and feature formula
- errors.py: `ModelError`, `RuntimeFailure`

Everything here imports numpy and the native runtimes only (never torch, nor tinyconv.export or
tinyconv.firmware_sim), so that the firmware simulator, which must run without torch on exported
files, and the exporter use one implementation of what the device does.
"""
