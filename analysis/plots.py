"""Figures as SVG text (matplotlib), to be inlined in the one-file report and saved beside it.

SVG keeps the report self-contained and crisp when zoomed; text stays text (svg.fonttype none)
so the browser's fonts render it and the numbers can be searched. Each function returns None
when there is nothing to draw, and the report says so instead of showing an empty axis.
"""

from __future__ import annotations

import io
import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .capacity import USLFit
from .metrics import node_key

plt.rcParams.update({
    "svg.fonttype": "none", "svg.hashsalt": "sioscale", "font.size": 9, "axes.titlesize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 96,
})
PALETTE = ["#2b6cb0", "#dd6b20", "#38a169", "#c53030", "#805ad5", "#d69e2e", "#319795", "#718096"]


def _short(names: list[str], width: int = 28) -> list[str]:
    return [n if len(n) <= width else n[: width - 1] + "…" for n in names]


def _finite(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric ±inf → NaN: matplotlib cannot place an infinite bar or point (it warns, or a pivot that
    dropped its all-NaN rows no longer lines up), and "no value" is what the tables show for it too."""
    num = df.select_dtypes("number").columns
    if not len(num):
        return df
    out = df.copy()
    out[num] = out[num].where(np.isfinite(out[num].astype(float)))
    return out


def to_svg(fig: plt.Figure) -> str:
    """Figure → inline-ready <svg> (no XML prolog or DOCTYPE, which are invalid inside HTML)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    s = buf.getvalue()
    s = s[s.find("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", s, flags=re.S)


def connect_success(conn: pd.DataFrame) -> str | None:
    if not len(conn):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(conn) + 1.2))
    y = np.arange(len(conn))
    ax.barh(y - 0.2, conn["connect_ratio"].fillna(0) * 100, 0.4, label="connect", color=PALETTE[0])
    ax.barh(y + 0.2, conn["upgrade_ratio"].fillna(0) * 100, 0.4, label="upgrade", color=PALETTE[2])
    ax.set_yticks(y, _short(list(conn["config"]), 40))
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("% of attempts (connect) / of connected sessions (upgrade)")
    ax.set_title("Connect and upgrade success")
    ax.legend(loc="lower right", fontsize=8)
    return to_svg(fig)


def _stacked_barh(t: pd.DataFrame, xlabel: str, title: str, ncol: int = 1) -> str:
    """One horizontal bar per row of `t` (index = config), one stacked segment per column, in column order."""
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(t) + 1.4))
    left = np.zeros(len(t))
    for i, k in enumerate(t.columns):
        ax.barh(range(len(t)), t[k], left=left, label=str(k), color=PALETTE[i % len(PALETTE)])
        left += t[k].to_numpy()
    ax.set_yticks(range(len(t)), _short(list(t.index), 40))
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right", ncol=ncol)
    return to_svg(fig)


def failure_breakdown(fails: pd.DataFrame) -> str | None:
    if not len(fails):
        return None
    t = fails.pivot_table(index="config", columns="error_kind", values="count", aggfunc="sum", fill_value=0)
    return _stacked_barh(t, "failed steps", "Failures by kind")


def node_distribution(dist: pd.DataFrame) -> str | None:
    """Sessions per node, stacked in the nodes' natural order (n1, n2, …, n10), as the tables list them."""
    if not len(dist):
        return None
    t = dist.pivot_table(index="config", columns="node", values="sessions", aggfunc="sum", fill_value=0)
    t = t[sorted(t.columns, key=lambda n: node_key(str(n)))]
    return _stacked_barh(t, "sessions (connected)", "Sessions per node", ncol=min(4, len(t.columns)))


def latency_by_step(lat: pd.DataFrame) -> str | None:
    """p95 per step and config (bars), p50 as a tick."""
    if not len(lat):
        return None
    lat = _finite(lat)
    # one grid for both: pivot_table drops all-NaN rows, so a step with a p50 but no p95 would leave
    # the two tables of different shapes (the "x and y must be the same size" crash)
    p95 = lat.pivot_table(index="step", columns="config", values="p95", aggfunc="max", dropna=False)
    p50 = lat.pivot_table(index="step", columns="config", values="p50", aggfunc="max", dropna=False)
    p50 = p50.reindex(index=p95.index, columns=p95.columns)
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    n = len(p95.columns)
    w = 0.8 / max(1, n)
    x = np.arange(len(p95.index))
    for i, c in enumerate(p95.columns):
        ax.bar(x + i * w - 0.4 + w / 2, p95[c].fillna(0), w, label=_short([str(c)], 40)[0],
               color=PALETTE[i % len(PALETTE)])
        ax.scatter(x + i * w - 0.4 + w / 2, p50[c], marker="_", color="black", s=60, zorder=3)
    ax.set_xticks(x, list(p95.index), rotation=20)
    ax.set_ylabel("ms (bar p95, tick p50)")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_title("Latency by step")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return to_svg(fig)


def latency_over_time(lot: pd.DataFrame, step: str = "ack") -> str | None:
    lot = _finite(lot)
    d = lot[lot["step"] == step]
    if not len(d):
        d = lot[lot["step"] == "connect"]
        step = "connect"
    if not len(d):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    for i, (c, g) in enumerate(d.groupby("config", sort=False)):
        ax.plot(g["t"], g["p95"], marker=".", label=_short([str(c)], 40)[0], color=PALETTE[i % len(PALETTE)])
    ax.set_xlabel("seconds since start")
    ax.set_ylabel(f"{step} p95 ms")
    ax.set_title(f"{step} latency over time (p95 per bucket)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return to_svg(fig)


def generator_cpu_over_time(gen: pd.DataFrame, saturated: float = 90.0) -> str | None:
    """The busiest Locust process's CPU per second, a line per config, with the saturation line."""
    if gen is None or not len(gen):
        return None
    gen = _finite(gen)
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    for i, (c, g) in enumerate(gen.groupby("config", sort=False)):
        ax.plot(g["t"], g["cpu_percent"], color=PALETTE[i % len(PALETTE)], label=_short([str(c)], 40)[0])
    ax.axhline(saturated, color="#c53030", linestyle="--", linewidth=1, label=f"saturated ({saturated:.0f}%)")
    top = float(gen["cpu_percent"].max())
    ax.set_ylim(0, max(105.0, top * 1.05 if np.isfinite(top) else 0.0))
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("CPU % (busiest process)")
    ax.set_title("Load generator CPU (Locust processes)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return to_svg(fig)


def _mark_faults(ax: plt.Axes, marks: list[tuple[float, str]] | None) -> None:
    """A dashed vertical line and a label per fault (s since start): what the curves must be read against."""
    for t, label in marks or ():
        ax.axvline(t, color="#555555", linestyle="--", linewidth=0.8)
        ax.text(t, 0.98, f" {label}", transform=ax.get_xaxis_transform(), rotation=90, fontsize=7,
                va="top", ha="left", color="#555555")


def failures_over_time(fot: pd.DataFrame, faults: list[tuple[float, str]] | None = None) -> str | None:
    """Failed steps % and connected users per second, a line per config; each fault a dashed line."""
    if not len(fot):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    _mark_faults(ax, faults)
    ax2 = ax.twinx()
    for i, (c, g) in enumerate(fot.groupby("config", sort=False)):
        col = PALETTE[i % len(PALETTE)]
        ax.plot(g["t"], g["failure_ratio"] * 100, color=col, label=_short([str(c)], 40)[0])
        ax2.plot(g["t"], g["active"], color=col, linestyle=":", alpha=0.7)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("failed steps % (solid)")
    ax2.set_ylabel("connected users (dotted)")
    ax.set_title("Failures against connected users")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.12, 1))
    return to_svg(fig)


def broadcast_delivery(deliv: pd.DataFrame) -> str | None:
    if not len(deliv):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(deliv) + 1.2))
    y = np.arange(len(deliv))
    ax.barh(y, deliv["delivery_ratio"].fillna(0) * 100, color=PALETTE[1])
    for i, (r, p) in enumerate(zip(deliv["delivery_ratio"], deliv["lat_p95"], strict=True)):
        lab = "n/a" if r is None or (isinstance(r, float) and math.isnan(r)) else f"{100 * r:.0f}%"
        if p is not None and not (isinstance(p, float) and math.isnan(p)):
            lab += f"  p95 {p:.0f} ms"
        ax.text(1, i, lab, va="center", fontsize=8, color="white" if (r or 0) > 0.25 else "black")
    ax.set_yticks(y, _short(list(deliv["config"]), 40))
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("% of expected room deliveries")
    ax.set_title("Broadcast delivery")
    return to_svg(fig)


def capacity(stats: pd.DataFrame, fit: USLFit | None, knee_users: float | None, title: str) -> str | None:
    if stats is None or not len(stats):
        return None
    stats = _finite(stats)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.5, 3.0))
    a1.plot(stats["users"], stats["throughput"], "o", color=PALETTE[0], label="measured")
    if fit is not None:
        xs = np.linspace(max(1, stats["users"].min() * 0.5), stats["users"].max() * 1.5, 100)
        a1.plot(xs, fit.predict(xs), "-", color=PALETTE[1],
                label=f"USL α={fit.alpha:.3g} β={fit.beta:.2g}" + ("" if fit.meaningful else " (weak)"))
    a1.set_xlabel("users")
    a1.set_ylabel("messages / s")
    a1.set_title("Throughput vs users")
    a1.legend(fontsize=7)
    a2.plot(stats["users"], stats["p95_connect_ms"], "o-", label="p95 connect", color=PALETTE[2])
    a2.plot(stats["users"], stats["p95_ack_ms"], "s-", label="p95 ack", color=PALETTE[3])
    if knee_users:
        a2.axvline(knee_users, color="black", linestyle="--", linewidth=1, label="knee")
    a2.set_yscale("symlog", linthresh=1)
    a2.set_xlabel("users")
    a2.set_ylabel("ms")
    a2.set_title("Latency per step")
    a2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return to_svg(fig)


def node_resources(ot: pd.DataFrame, title: str, cpu_limit_percent: float | None = None,
                   memory_limit_bytes: float | None = None) -> str | None:
    """Per node over time: CPU % (100 = one core), RSS (MiB) and event-loop lag p99 (ms), a line per node,
    with the nodes' CPU and memory limits as dashed lines when they have them.

    ot: analysis.resources.over_time (id, metric, t, value). Panels without samples are left out.
    """
    if ot is None or not len(ot):
        return None
    ot = _finite(ot)
    panels = [(m, lab) for m, lab in (("cpu_percent", "CPU % (100 = one core)"), ("rss_bytes", "RSS MiB"),
                                      ("event_loop_lag_ms", "event-loop lag p99 ms")) if (ot["metric"] == m).any()]
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 1.7 * len(panels) + 0.6), sharex=True, squeeze=False)
    ids = sorted(ot["id"].unique())
    for ax, (metric, label) in zip(axes[:, 0], panels, strict=True):
        d = ot[ot["metric"] == metric]
        for i, n in enumerate(ids):
            g = d[d["id"] == n].sort_values("t")
            if len(g):
                y = g["value"] / 2**20 if metric == "rss_bytes" else g["value"]
                ax.plot(g["t"], y, color=PALETTE[i % len(PALETTE)], label=str(n), linewidth=1)
        limit = {"cpu_percent": cpu_limit_percent,
                 "rss_bytes": memory_limit_bytes / 2**20 if memory_limit_bytes else None}.get(metric)
        top = float((d["value"] / 2**20 if metric == "rss_bytes" else d["value"]).max()) if len(d) else 0.0
        if limit and limit <= 2 * top:  # a limit far above the data would flatten it: the table gives it instead
            ax.axhline(limit, color="#c53030", linestyle="--", linewidth=1, label="limit")
        ax.set_ylabel(label, fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    axes[-1, 0].set_xlabel("seconds since start")
    fig.suptitle(f"Nodes' resources — {_short([title], 60)[0]}", fontsize=9)
    return to_svg(fig)


def resources_by_stage(use: pd.DataFrame, title: str) -> str | None:
    """Each stage's hold mean against its users: CPU % (nodes and Redis), node RSS (MiB) and lag p99 (ms).

    use: analysis.resources.use_table as a frame (stage, users, component, id, cpu_percent, rss_bytes, lag_p99_ms,
    cpu_limit_percent). None below two stages: one point is no curve.
    """
    if use is None or not len(use) or use["stage"].nunique() < 2:
        return None
    use = _finite(use)
    panels = (("cpu_percent", "CPU % (100 = one core)", 1.0), ("rss_bytes", "RSS MiB", 2**20), ("lag_p99_ms", "lag p99 ms", 1.0))
    fig, axes = plt.subplots(1, 3, figsize=(8.5, 2.6))
    for ax, (col, label, scale) in zip(axes, panels, strict=True):
        d = use[use["component"].isin(("node", "redis") if col == "cpu_percent" else ("node",))]
        for i, ((comp, n), g) in enumerate(d.groupby(["component", "id"], sort=True)):
            g = g.dropna(subset=[col]).sort_values("users")
            if len(g):
                ax.plot(g["users"], g[col] / scale, "o-", color=PALETTE[i % len(PALETTE)], label=f"{comp} {n}", markersize=3)
        if col == "cpu_percent" and "cpu_limited" in d and d["cpu_limited"].fillna(False).astype(bool).any():
            ax.axhline(float(d.loc[d["cpu_limited"].fillna(False).astype(bool), "cpu_limit_percent"].min()),
                       color="#c53030", linestyle="--", linewidth=1, label="limit")
        ax.set_xlabel("users")
        ax.set_title(label, fontsize=8)
    if not any(ax.lines for ax in axes):
        plt.close(fig)
        return None
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.suptitle(f"Resources per step (hold means) — {_short([title], 60)[0]}", fontsize=9, y=1.04)
    return to_svg(fig)
