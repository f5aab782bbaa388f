"""Stage 2 of Deep Compression: trained quantization (weight sharing with k-means codebooks).

Public names are re-exported lazily by `dc_keras` (`dc_keras.cluster_weights`, `dc_keras.strip_clustering`,
`dc_keras.compression_report`, ...); see docs/clustering.md.
"""
