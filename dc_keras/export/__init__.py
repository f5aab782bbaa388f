"""dc_keras.export: write a compressed model as a .tflite whose weights stay compressed.

`export_tflite(model, path)` converts a stripped pruned+clustered Keras model with TensorFlow's converter
and rewrites the layers that pay to compress into dc custom ops (e.g. FULLY_CONNECTED -> DcFullyConnected)
that carry a dc_codec blob; `inspect_tflite(path)` reads the per-layer report back from a file. The
custom ops run with dc_keras's TFLite delegate (`dc_keras.delegate`).
"""
from dc_keras.export.errors import ExportError, ExportVerificationError, NoCompressibleLayerError
from dc_keras.export.exporter import export_tflite
from dc_keras.export.report import ExportReport, LayerReport, inspect_tflite

__all__ = ["ExportError", "ExportReport", "ExportVerificationError", "LayerReport", "NoCompressibleLayerError",
           "export_tflite", "inspect_tflite"]
