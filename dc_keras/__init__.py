"""dc_keras: Deep Compression (Han, Mao, Dally, ICLR 2016) for Keras 3.

Pruning and weight sharing train inside `model.fit`; the exporter writes a `.tflite` whose weights stay
compressed (relative sparse indices + codebook indices + Huffman), run by dc_keras's C++ delegate.

Public names mirror tensorflow-model-optimization's so that tfmot users switch in minutes. `import
dc_keras` imports Keras and TensorFlow: the pruning, clustering and compressed layers register themselves
with Keras then, so `keras.models.load_model` finds them without custom_objects. TensorFlow's start-up
notices (oneDNN, CUDA drivers, CPU features) are filtered out of stderr during that import; set
DC_KERAS_TF_LOGS=1 to see them. Everything else (native builds, the exporter, the pipeline) is imported
when its names are first used.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC_NAMES = {
    # pruning (stage 1)
    "prune_low_magnitude": "dc_keras.pruning.wrapper",
    "PruneLowMagnitude": "dc_keras.pruning.wrapper",
    "PrunableLayer": "dc_keras.pruning.wrapper",
    "strip_pruning": "dc_keras.pruning.strip",
    "PolynomialDecay": "dc_keras.pruning.schedule",
    "ConstantSparsity": "dc_keras.pruning.schedule",
    "SensitivityThreshold": "dc_keras.pruning.schedule",
    "sparsity_report": "dc_keras.report",
    # weight sharing (stage 2)
    "cluster_weights": "dc_keras.clustering.wrapper",
    "ClusterWeights": "dc_keras.clustering.wrapper",
    "ClusterableLayer": "dc_keras.clustering.wrapper",
    "CentroidInitialization": "dc_keras.clustering.centroids",
    "strip_clustering": "dc_keras.clustering.strip",
    "compression_report": "dc_keras.clustering.report",
    # TensorFlow custom op and compressed layers
    "compress_model": "dc_keras.compressed_layers",
    "CompressedDense": "dc_keras.compressed_layers",
    "CompressedConv2D": "dc_keras.compressed_layers",
    "CompressedEmbedding": "dc_keras.compressed_layers",
    # TFLite export and delegate
    "export_tflite": "dc_keras.export.exporter",
    "delegate_path": "dc_keras.delegate",
    # full pipeline
    "DeepCompression": "dc_keras.pipeline",
    "CompressionConfig": "dc_keras.pipeline",
    "sensitivity_analysis": "dc_keras.sensitivity",
}
_SUBMODULES = {"callbacks", "codec", "datasets", "ops", "report", "pruning", "clustering", "export",
               "delegate", "pipeline", "sensitivity", "compressed_layers", "layer_registry", "models",
               "benchmark"}

__all__ = sorted(_PUBLIC_NAMES) + sorted(_SUBMODULES)


def __getattr__(name: str):
    if name in _PUBLIC_NAMES:
        value = getattr(importlib.import_module(_PUBLIC_NAMES[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"dc_keras.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'dc_keras' has no attribute {name!r}")


def __dir__():
    return __all__


# Modules whose Keras classes must be registered as soon as dc_keras is imported, so that
# `keras.models.load_model("x.keras")` finds them without the user passing custom_objects.
_SERIALIZABLE_MODULES = (
    "dc_keras.pruning.wrapper",
    "dc_keras.clustering.wrapper",
    "dc_keras.compressed_layers",
)


def _register_keras_objects() -> None:
    for module in _SERIALIZABLE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            # A stage that is not part of this install is fine; a missing dependency inside it is not.
            if not (error.name and module.startswith(error.name)):
                raise


from dc_keras import _tf_notices  # noqa: E402  (after the lazy-name machinery above)

with _tf_notices.filtered():
    _register_keras_objects()
