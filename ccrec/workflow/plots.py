"""Figures of the experiment reports (workflow/experiments.py): bars, size curves, heatmaps, sweeps.

Every function takes `experiments.summarize` entries (or a workdir) and returns a matplotlib
figure; matplotlib is imported on first use, with the Agg backend unless MPLBACKEND is set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np


def pyplot():
  # Imported here: matplotlib is needed for figures only, and its backend must be chosen
  # before pyplot is imported.
  import matplotlib

  if not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # after the backend (see above)

  return plt


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, legend: bool = True):
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  if legend:
    ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def _sd(e: dict, key: str) -> float:
  return 0.0 if math.isnan(e[f"{key}/sd"]) else 100 * e[f"{key}/sd"]


def bar_chart(summary: Sequence[dict], keys: Sequence[str], title: str = ""):
  """Grouped bars (one group per variant, one bar per key) with ± sd error bars, in %."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(summary), 3.4))
  width = 0.8 / len(keys)
  x = np.arange(len(summary))
  for i, k in enumerate(keys):
    ax.bar(
        x + (i - (len(keys) - 1) / 2) * width,
        [100 * e[f"{k}/mean"] for e in summary],
        width,
        yerr=[_sd(e, k) for e in summary],
        capsize=3,
        label=k.split("/")[-1],
    )
  ax.set_xticks(x, [e["variant"] for e in summary])
  return _finish(fig, ax, "", "%", title)


def size_curve(
    summary: Sequence[dict], key: str, references: Mapping[str, dict] | None = None, title: str = ""
):
  """Accuracy vs compressed size (bytes, log x), one line per K. `references`: name ->
  summary entry, drawn as a point if it has a compressed size (TT), else a line (teacher)."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  size = "student/compression/compressed_bytes/mean"
  by_k: dict[int, list] = {}
  for e in summary:
    by_k.setdefault(e["overrides"]["codes.codebook_size"], []).append(e)
  for k, entries in sorted(by_k.items()):
    entries = sorted(entries, key=lambda e: e[size])
    ax.plot(
        [e[size] for e in entries],
        [100 * e[f"{key}/mean"] for e in entries],
        "o-",
        label=f"codes K={k}",
    )
    for e in entries:
      ax.annotate(f"M={e['overrides']['codes.num_codebooks']}", (e[size], 100 * e[f"{key}/mean"]))
  for name, e in (references or {}).items():
    if size in e and not math.isnan(e[size]):
      ax.plot([e[size]], [100 * e[f"{key}/mean"]], "s", label=name)
    else:
      ax.axhline(100 * e[f"{key}/mean"], ls="--", color="gray", label=name)
  ax.set_xscale("log")
  return _finish(
      fig, ax, "compressed item representation (bytes)", key.split("/")[-1] + " (%)", title
  )


def usage_heatmap(workdir: str, title: str = ""):
  """Items per codeword (WORKDIR/codes/codes.npz 'usage' [M, K])."""
  plt = pyplot()
  with np.load(os.path.join(workdir, "codes", "codes.npz")) as f:
    usage = f["usage"]
  fig, ax = plt.subplots(figsize=(min(12, 2 + usage.shape[1] * 0.15), 1 + 0.5 * usage.shape[0]))
  fig.colorbar(ax.imshow(usage, aspect="auto", cmap="viridis"), ax=ax, label="items")
  ax.set_yticks(range(usage.shape[0]))
  return _finish(fig, ax, "codeword k", "codebook m", title, legend=False)


def sweep_plot(
    summary: Sequence[dict], key: str, fields: Sequence[str], title: str = "", min_span: float = 1.0
):
  """One panel per swept field: mean ± sd of `key` against the field's value. Every panel's
  y axis spans at least `min_span` points, so that gaps within seed noise do not look steep."""
  plt = pyplot()
  fig, axes = plt.subplots(1, len(fields), figsize=(3.3 * len(fields), 3.0), squeeze=False)
  for ax, field in zip(axes[0], fields):
    pts = sorted(
        (e["overrides"][field], 100 * e[f"{key}/mean"], _sd(e, key))
        for e in summary
        if field in e["overrides"]
    )
    if pts:
      xs, ys, sds = zip(*pts)
      ax.errorbar(xs, ys, yerr=sds, marker="o", capsize=3)
      if field == "distill.beta":
        ax.set_xscale("log")
    for e in summary:
      if field == "student.eta" and e["overrides"].get("student.mixup") is False:
        ax.axhline(100 * e[f"{key}/mean"], ls="--", color="gray", label="no mixup")
    lo, hi = ax.get_ylim()
    if hi - lo < min_span:
      mid = (lo + hi) / 2
      ax.set_ylim(mid - min_span / 2, mid + min_span / 2)
    _finish(
        fig,
        ax,
        field.split(".")[-1],
        key.split("/")[-1] + " (%)",
        "",
        legend=field == "student.eta" and len(ax.get_lines()) > 1,
    )
  fig.suptitle(title)
  fig.tight_layout()
  return fig
