"""bench/growth.png from bench/results.json: how the fan-out's time grows with its recipients
(next to the no-index floor) and how the feed's first page and the unread badge grow with
the table. `python -m bench` writes it after the results; alone:

    .venv/bin/python -m bench.plot [bench/results.json] [-o bench/growth.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Same colour and marker for the same user in both read panels (their lines may coincide);
# p50 solid, p99 dashed.
USERS = {"random user": ("tab:blue", "o"), "heavy user": ("tab:red", "s")}


def short_count(n: float) -> str:
    """10k, 1M, 5.05M: short enough for an axis tick or side by side in a table cell."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:g}"


def write(results: dict[str, Any], path: Path) -> Path | None:
    """Draw what the results hold; None (and no file) when they hold no growth figures."""
    stages = results.get("fanout", {}).get("stages", [])
    growth = results.get("reads", {}).get("growth", [])
    if not stages and not growth:
        return None
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install '.[bench]'): no plot", file=sys.stderr)
        return None
    # Agg: no display on the bench machine, and none wanted.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    panels = int(bool(stages)) + 2 * int(bool(growth))
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4), squeeze=False)
    row = list(axes[0])
    counts = FuncFormatter(lambda x, _pos: short_count(x))

    if stages:
        ax = row.pop(0)
        n = [s["subscribers"] for s in stages]
        wall = [s["wall_s"] for s in stages]
        floor = [s["floor_s"] for s in stages]
        ax.plot(n, wall, "o-", color="tab:blue", label="fan-out (listener, commit -> visible)")
        ax.plot(n, floor, "s--", color="tab:gray", label="floor (plain rows, no index)")
        # What proportional growth from the smallest size would look like, to judge the slope.
        ax.plot(
            n,
            [wall[0] * x / n[0] for x in n],
            ":",
            color="tab:blue",
            alpha=0.5,
            label="proportional to recipients",
        )
        # The figures in a box at the top left, which the climbing curves leave empty; labels
        # at the points collide where the sizes are close on the log axis.
        ax.text(
            0.03,
            0.97,
            "\n".join(
                f"{short_count(s['subscribers']):>5}: {s['wall_s']:.3g} s,"
                f" {s['ratio_to_floor']:.1f}x floor"
                for s in stages
            ),
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            family="monospace",
            bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9},
        )
        ax.margins(x=0.08, y=0.15)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(n)
        ax.xaxis.set_major_formatter(counts)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda _x, _pos: ""))
        ax.set_xlabel("recipients of one event")
        ax.set_ylabel("seconds (log)")
        ax.set_title("fan-out time vs recipients")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")

    if growth:
        rows = [g["notifications"] for g in growth]
        reads = results["reads"]
        via = "over HTTP" if reads.get("mode") == "http" else "SQL, no HTTP"
        clients = reads.get("clients", "?")
        for ax, what, title in (
            (row[0], "first page", "feed, first page (20 items)"),
            (row[1], "unread count", "badge (unread count)"),
        ):
            for user, (colour, marker) in USERS.items():
                kind = f"{what}, {user}"
                for pct, line in (("p50", "-"), ("p99", "--")):
                    ys = [g["queries"][kind][f"{pct}_ms"] for g in growth]
                    ax.plot(
                        rows,
                        ys,
                        marker=marker,
                        linestyle=line,
                        color=colour,
                        fillstyle="none" if user == "heavy user" else "full",
                        label=f"{user} {pct}",
                    )
            heavy = ", ".join(short_count(g["heavy_user_notifications"]) for g in growth)
            ax.set_xscale("log")
            ax.set_xticks(rows)
            ax.xaxis.set_major_formatter(counts)
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda _x, _pos: ""))
            ax.set_ylim(bottom=0)
            ax.set_xlabel(f"user_notifications rows (heavy user's: {heavy})")
            ax.set_ylabel(f"ms per request ({via}, {clients} clients)")
            ax.set_title(f"{title} vs rows")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)

    meta = results.get("meta", {})
    fig.suptitle(
        f"growth, {meta.get('date', '?')}, commit {meta.get('commit', '?')}"
        + (" (--quick: small sizes)" if meta.get("quick") else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=HERE / "results.json")
    parser.add_argument("-o", "--output", type=Path, default=HERE / "growth.png")
    args = parser.parse_args(argv)
    written = write(json.loads(args.results.read_text()), args.output)
    if written is None:
        print(f"{args.results} holds no fan-out stages or reads growth: no plot", file=sys.stderr)
        return 1
    print(f"wrote {written}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
