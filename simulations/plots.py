"""Matplotlib figures for scenario results (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from .scenario import Plot


def render(plot: Plot, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        for label, xs, ys in plot.lines:
            if plot.kind == "bar":
                # Bars at numeric positions with text tick labels: string x values would
                # make matplotlib guess category units, and log that it did.
                positions = list(range(len(xs)))
                ax.bar(positions, ys, label=label, alpha=0.7)
                ax.set_xticks(positions, [str(x) for x in xs])
            else:
                ax.plot(xs, ys, label=label, marker="." if len(xs) < 50 else None)
        ax.set_title(plot.title)
        ax.set_xlabel(plot.xlabel)
        ax.set_ylabel(plot.ylabel)
        if plot.logy:
            ax.set_yscale("log")
        if len(plot.lines) > 1:
            ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, metadata={"Software": None})
    finally:
        plt.close(fig)


__all__ = ["render"]
