"""PNG plots of a run: weight histograms per stage and the shared values of each layer."""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from dc_keras.pipeline.keras_tools import kernel_arrays


def write_plots(directory: str, dense_model, pruned_model, clustered_model) -> Optional[List[str]]:
    """PNG weight histograms (dense / pruned / clustered) per layer and codebook centroid plots.

    Returns the written paths, or None when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    stages = [(label, kernel_arrays(m)) for label, m in
              (("dense", dense_model), ("pruned", pruned_model), ("clustered", clustered_model)) if m is not None]
    if not stages:
        return []
    names = list(stages[0][1])
    written = []
    fig, axes = plt.subplots(len(names), len(stages), figsize=(4 * len(stages), 2.6 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for col, (label, kernels) in enumerate(stages):
            ax = axes[row][col]
            values = kernels.get(name)
            if values is None:
                ax.set_visible(False)
                continue
            nonzero = values[values != 0]
            ax.hist(nonzero, bins=100 if label != "clustered" else 200, color="C%d" % col)
            ax.set_title(f"{name} {label}: {nonzero.size}/{values.size} nonzero", fontsize=9)
            ax.tick_params(labelsize=7)
    written.append(_save(plt, fig, directory, "weight_histograms.png"))

    if clustered_model is not None:
        kernels = kernel_arrays(clustered_model)
        fig, axes = plt.subplots(1, len(kernels), figsize=(3.2 * len(kernels), 3), squeeze=False)
        for ax, (name, values) in zip(axes[0], kernels.items()):
            centroids, counts = np.unique(values[values != 0], return_counts=True)
            ax.vlines(centroids, 0, counts, color="C3")
            ax.plot(centroids, counts, "o", color="C3", markersize=3)
            ax.set_title(f"{name}: {centroids.size} centroids", fontsize=9)
            ax.set_xlabel("shared value", fontsize=8)
            ax.set_ylabel("weights", fontsize=8)
            ax.tick_params(labelsize=7)
        written.append(_save(plt, fig, directory, "codebook_centroids.png"))
    return written


def _save(plt, fig, directory: str, name: str) -> str:
    """Lays out, writes and closes `fig` as `name` in `directory`; returns the path."""
    fig.tight_layout()
    path = os.path.join(directory, name)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
