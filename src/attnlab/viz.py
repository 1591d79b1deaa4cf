"""Plots and widgets shared by the chapters (needs matplotlib; widgets need ipywidgets).

Kept out of the attention code so that ``import attnlab`` needs only torch.
"""

import matplotlib.pyplot as plt
import torch
from torch import Tensor


def plot_weights(weights: Tensor, queries=None, keys=None, ax=None, title=None, annotate=True):
    """Heatmap of one attention-weight matrix: row = query, column = key.

    Masked entries (weight exactly 0) are drawn hatched-grey so a mask is visible.

    Shapes:
        weights: (T, S)
        queries: T labels or None; keys: S labels or None
    """
    if weights.dim() != 2:
        raise ValueError(f"plot_weights needs a (T, S) matrix, got shape {tuple(weights.shape)}")
    w = weights.detach().float().cpu()
    T, S = w.shape
    ax = ax or plt.gca()
    shown = torch.where(w == 0, torch.full_like(w, float("nan")), w)
    image = ax.imshow(shown.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_facecolor("#dddddd")
    ax.set_xticks(range(S), labels=keys if keys is not None else range(S))
    ax.set_yticks(range(T), labels=queries if queries is not None else range(T))
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    if annotate and T * S <= 100:
        for i in range(T):
            for j in range(S):
                value = w[i, j].item()
                color = "white" if value < 0.6 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=color, fontsize=8)
    return image
