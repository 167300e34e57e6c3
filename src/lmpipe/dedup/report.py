"""Plots of a dedup run's clusters (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def plot_cluster_sizes(cluster_sizes: dict[str, int], path: str | Path, title: str = "dedup clusters") -> Path:
    """Bar chart: number of duplicate clusters per cluster size (documents in the cluster, kept one included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sizes = sorted((int(k), v) for k, v in cluster_sizes.items())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if sizes:
        ax.bar([str(s) for s, _ in sizes], [n for _, n in sizes], color="#4477aa")
    else:
        ax.text(0.5, 0.5, "no duplicate clusters", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("documents per cluster")
    ax.set_ylabel("clusters")
    ax.set_title(f"{title} ({sum(n for _, n in sizes)} clusters)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
