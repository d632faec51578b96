"""The common tail of every plot of the folder (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, title: str, png: Path) -> Path:
    """Title, tight layout, write ``png`` (parents created), close: the common tail of every plot here."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
