"""Exceptions of the TFLite exporter."""


class ExportError(ValueError):
    """The model cannot be exported as asked (unsupported input, too many distinct values, ...)."""


class NoCompressibleLayerError(ExportError):
    """No layer of the model has weights that dc_keras can store compressed."""


class ExportVerificationError(ExportError):
    """verify=True found the exported file's outputs differ from the Keras model's."""
