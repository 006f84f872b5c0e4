"""Run directories → reports/NAME/ (index.html, summary.json, plots/*.svg).

The summary dict is built first from the metric functions; verdicts, the HTML and summary.json
are all views of it, so the page and the CI-readable JSON cannot disagree. Nothing the run
directories contain can make this raise: bad input shows up as warnings and "n/a" cells.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import sys
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from contract.fmt import num
from contract.status import RunStatus, Status, reconcile, worst  # stdlib-only: one status machine

from . import aggregates as A
from . import answer as AN
from . import capacity as C
from . import metrics as M
from . import plots as P
from . import recipes as RC
from . import resources as R
from . import sessions as S
from .load import CONFIG_KEYS, Frames, load_runs
from .recovery import by_fault, fault_label, fault_verdict, recovery_block, redis_load
from .summary import (
    SCHEMA,
    Broadcast,
    CheckOutcome,
    ConfigBlock,
    ConfigEntry,
    ConfigSummary,
    Connections,
    FirstFailure,
    Latency,
    NodeSwitch,
    Percentiles,
    Steps,
)
from .verdicts import config_verdicts, describe

TARGET_USERS = (1_000, 10_000, 100_000)
"""Targets for the 'nodes needed' table."""


def write_report(run_dirs: list[str | Path] | tuple[str | Path, ...], out_dir: str | Path, title: str | None = None,
                 thresholds: Any = None, thresholds_source: str | None = None) -> dict[str, Any]:
    """Load the runs, write index.html + summary.json + plots/*.svg into out_dir; return the summary.

    thresholds: a contract.config.Thresholds or a dict of the same keys; used as the capacity SLO and
    checked per config (summary `checks`). SLO keys they leave out take capacity.DEFAULT_SLO's value;
    summary `slo` records which value came from where (thresholds_source names e.g. the campaign file).
    """
    out = Path(out_dir)
    frames = load_runs([Path(d) for d in run_dirs])
    th = _thresholds(thresholds)
    summary, tables, figures = build(frames, th, title or _default_title(run_dirs))
    summary.slo = _slo_used(th, thresholds_source)
    plain = summary.to_json()  # the one serialisation: summary.json, the page and the return value
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, svg in figures.items():
        if svg:
            (out / "plots" / f"{name}.svg").write_text(svg, encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(_jsonable(plain), indent=2, allow_nan=False), encoding="utf-8")
    html = render(plain, tables, figures)
    (out / "index.html").write_text(html, encoding="utf-8")
    return _jsonable(plain)


def summarize(run_dirs: list[str | Path] | tuple[str | Path, ...], title: str | None = None,
              thresholds: Any = None, thresholds_source: str | None = None) -> dict[str, Any]:
    """The summary write_report would write (summary.json's object), without writing any file.

    Why: `sioscale report --markdown-recipes` without --out prints a view of it (README's recipe table) from the
    same analysis as the page, so the two cannot disagree.
    """
    th = _thresholds(thresholds)
    summary, _, _ = build(load_runs([Path(d) for d in run_dirs]), th, title or _default_title(run_dirs))
    summary.slo = _slo_used(th, thresholds_source)
    return _jsonable(summary.to_json())


@dataclass
class _Metrics:
    """The metric tables over all configs that build reads each config entry and figure from."""

    conn: pd.DataFrame
    fails: pd.DataFrame
    fcounts: dict[str, Any]
    attrib: pd.DataFrame
    dist: pd.DataFrame
    bal: pd.DataFrame
    lat_node: pd.DataFrame
    lat_step: pd.DataFrame
    lot: pd.DataFrame
    fot: pd.DataFrame
    ff: pd.DataFrame
    deliv: pd.DataFrame
    adapters: pd.DataFrame
    dset: pd.DataFrame
    step_totals: dict[str, tuple[int, int]]
    by_step: dict[str, dict[str, dict[str, int]]]
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)
    sessions: pd.DataFrame = field(default_factory=pd.DataFrame)


def build(frames: Frames, thresholds: dict[str, float], title: str) -> tuple[ConfigSummary, dict[str, Any], dict[str, str | None]]:
    """The summary (summary.json), the tables the page shows, and the figures (name → svg)."""
    m = _metrics(frames, thresholds)
    configs: list[ConfigEntry] = []
    cap_figs: dict[str, str] = {}
    res_figs: dict[str, str] = {}
    figures: dict[str, str | None] = {}
    for _, r in frames.runs.iterrows():
        entry, stats, fit = _config_entry(frames, m, r, thresholds)
        name = entry.name
        if stats is not None and len(stats):
            cap_figs[name] = f"capacity-{_slug(name)}"
            figures[cap_figs[name]] = P.capacity(stats, fit, entry.capacity.get("users"), name)
        if entry.resources:
            res = frames.resources[frames.resources["config"] == name]
            key = f"resources-{_slug(name)}"
            size = entry.resources.get("node_size") or {}
            figures[key] = P.node_resources(R.over_time(res, _first_ts(frames.runs).get(name)), name,
                                            100 * size["cpu_cores"] if size.get("cpu_cores") else None,
                                            size.get("memory_bytes"))
            if figures[key]:
                res_figs[name] = key
            if entry.resources.get("use"):
                figures[f"{key}-steps"] = P.resources_by_stage(pd.DataFrame(entry.resources["use"]), name)
        configs.append(entry)
    _scale_out(configs)
    figures.update(_overview_figures(frames, m))
    summary = ConfigSummary(
        schema=SCHEMA, title=title,
        status=worst(c.status for c in configs).value if configs else Status.FAILED.value,
        generated=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        configs=configs,
        environment=_environment(frames),
        thresholds=thresholds,
        warnings=list(frames.warnings),
    )
    plain = [c.to_json() for c in configs]
    tables = _tables(m, plain, cap_figs)
    tables["resources_fig"] = res_figs
    tables["answer"] = {"matrix": AN.matrix(plain), "findings": AN.findings(plain), "needed": AN.nodes_needed(plain),
                        "usl_nodes": AN.usl_over_nodes(plain), "good": AN.GOOD, "fair": AN.FAIR,
                        "stepped": any((c.get("capacity") or {}).get("stages", 0) >= 2 for c in plain)}
    if RC.applies(plain):  # configurations that differ by balancer or policy: the recipe table leads the page
        summary.recipes = RC.records(RC.recipe_table(plain, _source_ranges(frames)))
        tables["recipes"] = {"rows": summary.recipes, "questions": RC.QUESTIONS, "good": AN.GOOD, "fair": AN.FAIR,
                             "spread_p": RC.SPREAD_P,
                             "sources": list(dict.fromkeys(x for r in summary.recipes for x in r["sources"]))}
    return summary, tables, figures


def _source_ranges(frames: Frames) -> dict[str, str | None]:
    """{config: the client source range it ran with (meta.json load.source_range)}; None: the generator's one address."""
    out: dict[str, str | None] = {}
    for name, meta in frames.meta.items():
        load = meta.get("load") if isinstance(meta, dict) and isinstance(meta.get("load"), dict) else {}
        rng = load.get("source_range")
        out[str(name)] = rng if isinstance(rng, str) and rng else None
    return out


def _scale_out(configs: list[ConfigEntry]) -> None:
    """Across configs that differ only in node count (and have the same node size): fit the per-node CPU cost
    against the node count jointly (analysis.resources.scale_out_fit) and answer nodes needed with it, and fit
    the USL over the node count (throughput at each config's knee: analysis.capacity.usl_over_nodes); each
    config's verdicts are said again with those answers."""
    groups: dict[tuple[Any, ...], list[ConfigEntry]] = {}
    for e in configs:
        c = e.config
        if not c.nodes or not e.capacity.get("stages"):
            continue
        nbr = e.capacity.get("nodes_needed_by_resource") or {}
        key = (c.balancer, c.policy, c.adapter, tuple(c.transports or ()), c.server, c.tls,
               (nbr.get("node_size") or {}).get("label"))
        groups.setdefault(key, []).append(e)
    for members in groups.values():
        if len({e.config.nodes for e in members}) < 2:
            continue
        usl = C.usl_over_nodes([{"config": e.name, "nodes": e.config.nodes, "capacity": e.capacity} for e in members])
        model = R.scale_out_fit([{"config": e.name, "nodes": e.config.nodes, "use": (e.resources or {}).get("use")}
                                 for e in members if e.capacity.get("nodes_needed_by_resource")])
        for e in members:
            if usl is not None:
                e.capacity["usl_nodes"] = usl
            if model is not None and e.capacity.get("nodes_needed_by_resource"):
                R.apply_scale_out(e.capacity["nodes_needed_by_resource"], model)
            e.verdicts = config_verdicts(e)


def _metrics(frames: Frames, thresholds: dict[str, float]) -> _Metrics:
    """Every metric table over all configs (analysis.metrics), once: counts and percentiles from the
    cells, sessions and nodes from the rows."""
    ev = frames.events
    cells = _cells(frames)
    runs = frames.runs
    t0 = _first_ts(runs) or None
    conn = M.connection_ratios(ev, cells).set_index("config") if len(ev) or len(cells) else pd.DataFrame()
    fails = M.failures(cells)
    fcounts = M.failure_counts(cells)
    attrib = M.node_switch_attribution(ev, cells).set_index("config") if len(ev) else pd.DataFrame()
    expected_nodes = {str(r["config"]): _int(r.get("nodes")) for _, r in runs.iterrows() if _int(r.get("nodes"))}
    dist = M.node_distribution(ev, expected_nodes)
    bal = M.node_balance(dist).set_index("config")
    lat_node = M.latency_percentiles(cells)
    lat_step = M.latency_percentiles(cells, by=("config", "step"))
    lot = M.latency_over_time(cells, t0=t0)
    fot = M.failures_over_time(ev, cells=cells, t0=t0)
    ff = M.first_failure_time(fot, thresholds.get("failure_ratio", C.DEFAULT_SLO["failure_ratio"])).set_index("config")
    deliv = M.delivery_table(ev, cells, frames.delivery, runs)
    adapters = M.adapter_comparison(deliv, runs)
    dset = deliv.set_index("config") if len(deliv) else pd.DataFrame()
    step_totals, by_step = _step_counts(cells)
    return _Metrics(conn=conn, fails=fails, fcounts=fcounts, attrib=attrib, dist=dist, bal=bal, lat_node=lat_node,
                    lat_step=lat_step, lot=lot, fot=fot, ff=ff, deliv=deliv, adapters=adapters, dset=dset,
                    step_totals=step_totals, by_step=by_step, cells=cells, sessions=S.session_ends(ev))


def _cells(frames: Frames) -> pd.DataFrame:
    """The per-second cells (load_runs fills them for both schemas; frames built by hand: from the rows)."""
    if len(frames.aggregates) or not len(frames.events):
        return frames.aggregates
    return A.aggregates_from_rows(frames.events)


def _step_counts(cells: pd.DataFrame) -> tuple[dict[str, tuple[int, int]], dict[str, dict[str, dict[str, int]]]]:
    """Failed steps / all steps per config (what `sioscale check --failure-ratio` bounds), and per step."""
    if not len(cells):
        return {}, {}
    d = pd.DataFrame({"config": cells["config"].astype(str), "step": cells["step"].astype(str),
                      "n": cells["count"].to_numpy(dtype="int64"),
                      "failed": np.where(cells["ok"].to_numpy() == 0, cells["count"].to_numpy(dtype="int64"), 0)})
    tot = d.groupby("config", sort=False)[["n", "failed"]].sum()
    step_totals = {str(k): (int(v["n"]), int(v["failed"])) for k, v in tot.iterrows()}
    by_step: dict[str, dict[str, dict[str, int]]] = {}
    for (cfg, step), v in d.groupby(["config", "step"], sort=True)[["n", "failed"]].sum().iterrows():
        if v["n"]:
            by_step.setdefault(str(cfg), {})[str(step)] = {"total": int(v["n"]), "failed": int(v["failed"])}
    return step_totals, by_step


def _config_entry(frames: Frames, m: _Metrics, r: pd.Series, thresholds: dict[str, float]) -> tuple[ConfigEntry, Any, Any]:
    """One config's summary.json entry, with the capacity stats and fit its figure is drawn from."""
    name = str(r["config"])
    meta = frames.meta.get(name, {})
    cfg_block = _config_block(meta, r)
    rs = _status(meta, r, [i for i in getattr(frames, "data_issues", []) if i.get("config") == name])
    entry = ConfigEntry(name=name, **rs.as_meta(),
                        error=r.get("error") if rs.status != Status.OK or r.get("error") else None,
                        config=cfg_block, options=_options(meta), events=int(r["n_events"]),
                        warnings=[w for w in frames.warnings if w.startswith(f"{name}: ")])
    entry.connections = _connections_section(m.conn, name)
    entry.failures = m.fcounts.get(name, {})
    entry.steps = _steps_section(m, name)
    entry.node_switch = _node_switch_section(m.attrib, name)
    entry.broadcast = _broadcast_section(m.dset, name)
    entry.latency_ms, entry.latency_by_node = _latency_sections(m, name)
    entry.nodes, entry.imbalance, entry.p_uniform = _node_sections(m, name)
    entry.first_failure = _first_failure_section(m.ff, name)
    entry.sessions = S.session_summary(m.sessions, name)
    gen = frames.generator[frames.generator["config"] == name] if len(frames.generator) else None
    entry.generator = C.generator_summary(gen)
    cap, stats, fit, found = _capacity(frames, name, frames.events, cfg_block, thresholds, entry.imbalance, m.cells)
    res = frames.resources[frames.resources["config"] == name] if len(frames.resources) else None
    cfg_cells = m.cells[m.cells["config"] == name] if len(m.cells) else m.cells
    cfg_events = frames.events[frames.events["config"] == name] if res is not None else None  # only to reconcile
    added, entry.resources = R.analyse(res, meta, found.get("windows"), stats, found.get("knee"), found.get("plan"),
                                       cfg_cells, cfg_events, _int(cfg_block.nodes) or 1)
    entry.capacity = {**cap, **added}
    entry.redis_vs_memory = _redis_vs_memory_section(m.adapters, name)
    # faults the runner injected (stop a node, Redis, the balancer): what the time series must be read against
    entry.faults = [{k: f.get(k) for k in (*_FAULT_BASE, *_FAULT_EXTRAS) if k in _FAULT_BASE or k in f}
                    for f in (meta.get("faults") or []) if isinstance(f, dict)]
    cfg_rows = frames.events[frames.events["config"] == name] if len(frames.events) else None
    entry.recovery = recovery_block(cfg_rows, cfg_cells, (frames.sio_stats.get(name) or {}).get("recovery"))
    if entry.recovery is not None:  # additive keys beside the pinned ones: per fault, and Redis's load
        entry.recovery["by_fault"] = by_fault(meta.get("faults"), cfg_cells, cfg_rows,
                                              (frames.sio_stats.get(name) or {}).get("recovery_by_second"))
        entry.recovery["redis"] = redis_load(res)
        client = (frames.sio_stats.get(name) or {}).get("recovery")
        entry.recovery["bad_offsets"] = client.get("bad_offset") if isinstance(client, dict) else None
    entry.checks = _checks(entry, thresholds)
    entry.verdicts = config_verdicts(entry)
    entry.description = describe(entry)
    return entry, stats, fit


_FAULT_BASE = ("at", "action", "target", "error")
_FAULT_EXTRAS = ("fraction", "duration", "mode", "cut", "sessions", "cut_by_node", "silenced", "silenced_by_node",
                 "down_s")
"""What blip / pause_node / restart_node add to a fault's record (issue 14), kept only where present."""


def _connections_section(conn: pd.DataFrame, name: str) -> Connections:
    """`connections`: attempted / connected / upgraded and the two ratios (zeros and None without events)."""
    if name not in conn.index:
        return Connections()
    c = conn.loc[name]
    return Connections(attempted=int(c["attempted"]), connected=int(c["connected"]), upgraded=int(c["upgraded"]),
                       connect_ratio=num(c["connect_ratio"]), upgrade_ratio=num(c["upgrade_ratio"]))


def _steps_section(m: _Metrics, name: str) -> Steps:
    """`steps`: failed / total steps, their ratio and the counts per step."""
    n_steps, n_failed = m.step_totals.get(name, (0, 0))
    return Steps(total=n_steps, failed=n_failed, failure_ratio=(n_failed / n_steps) if n_steps else None,
                 by_step=m.by_step.get(name, {}))


def _node_switch_section(attrib: pd.DataFrame, name: str) -> NodeSwitch | None:
    """`node_switch`: the session-unknown failures attributed to a node change (None without events)."""
    # share: over the polling 400s only (the probe refusals' attribution is by construction, see metrics)
    if name not in attrib.index:
        return None
    return NodeSwitch(**{f.name: num(attrib.loc[name, f.name]) for f in fields(NodeSwitch)})


def _broadcast_section(dset: pd.DataFrame, name: str) -> Broadcast:
    """`broadcast`: sent / expected / delivered, the delivery ratio and its latency percentiles."""
    if name not in dset.index:
        return Broadcast()
    d = dset.loc[name]
    return Broadcast(sent=int(d["sent"]), expected=int(d["expected"]), delivered=int(d["delivered"]),
                     delivery_ratio=num(d["delivery_ratio"]),
                     latency_ms=Percentiles(p50=num(d["lat_p50"]), p95=num(d["lat_p95"]), p99=num(d["lat_p99"])))


def _latency_sections(m: _Metrics, name: str) -> tuple[dict[str, Latency], dict[str, dict[str, Latency]]]:
    """`latency_ms` (per step) and `latency_by_node` (per step, per node)."""
    ls = m.lat_step[m.lat_step["config"] == name]
    by_node: dict[str, dict[str, Latency]] = {}
    for _, row in m.lat_node[m.lat_node["config"] == name].iterrows():
        by_node.setdefault(row["step"], {})[row["node"]] = _lat(row)
    return {row["step"]: _lat(row) for _, row in ls.iterrows()}, by_node


def _node_sections(m: _Metrics, name: str) -> tuple[dict[str, int], Any, Any]:
    """`nodes` (sessions per node), `imbalance` and `p_uniform`."""
    dn = m.dist[m.dist["config"] == name]
    return ({str(n): int(s) for n, s in zip(dn["node"], dn["sessions"], strict=True)},
            num(m.bal.loc[name, "imbalance"]) if name in m.bal.index else None,
            num(m.bal.loc[name, "p_uniform"]) if name in m.bal.index else None)


def _first_failure_section(ff: pd.DataFrame, name: str) -> FirstFailure | None:
    """`first_failure`: when (and at how many users) failures first passed the SLO, or None."""
    if name in ff.index and not math.isnan(ff.loc[name, "t"]):
        return FirstFailure(t_s=num(ff.loc[name, "t"]), active_users=num(ff.loc[name, "active"]))
    return None


def _redis_vs_memory_section(adapters: pd.DataFrame, name: str) -> dict[str, Any] | None:
    """`redis_vs_memory`: this Redis config against its memory twin, or None."""
    pair = adapters[adapters["redis"] == name]
    if not len(pair):
        return None
    return {k: num(v) if not isinstance(v, str) else v for k, v in pair.iloc[0].items()}


def _overview_figures(frames: Frames, m: _Metrics) -> dict[str, str | None]:
    """The figures over all configs (name → svg or None)."""
    return {
        "connect": P.connect_success(m.conn.reset_index()) if len(m.conn) else None,
        "failures": P.failure_breakdown(m.fails),
        "nodes": P.node_distribution(m.dist),
        "latency": P.latency_by_step(m.lat_step),
        "latency-time": P.latency_over_time(m.lot),
        "generator-time": P.generator_cpu_over_time(C.generator_over_time(frames.generator, _first_ts(frames.runs)),
                                                    C.GENERATOR_SATURATED),
        "failures-time": P.failures_over_time(m.fot, _fault_marks(frames)),
        "broadcast": P.broadcast_delivery(m.deliv),
    }


def _tables(m: _Metrics, configs: list[dict[str, Any]], cap_figs: dict[str, str]) -> dict[str, Any]:
    """The tables the page shows beside the summary."""
    return {
        "failures": m.fails.head(200).to_dict("records"),
        "failures_total": int(m.fails["count"].sum()) if len(m.fails) else 0,
        "failure_kinds": sorted({k for c in configs for k in (c.get("failures") or {})}),
        "latency_node": m.lat_node.to_dict("records"),
        "nodes": m.dist.to_dict("records"),
        "adapters": m.adapters.to_dict("records"),
        "capacity_fig": cap_figs,
        "config_keys": CONFIG_KEYS,
        "assumptions": C.NODES_NEEDED_ASSUMPTIONS,
        "targets": TARGET_USERS,
        "generator_saturated": C.GENERATOR_SATURATED,
        "bounds": {"cpu_share": R.CPU_BOUND_SHARE, "lag_ms": R.LAG_BOUND_MS, "memory_share": R.MEMORY_BOUND_SHARE,
                   "throttled_share": R.THROTTLED_BOUND_SHARE, "reconcile": R.RECONCILE_TOLERANCE},
    }


def render(summary: dict[str, Any], tables: dict[str, Any], figures: dict[str, str | None]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.ChainableUndefined)  # optional keys render empty
    env.filters["pct"] = _fmt_pct
    env.filters["ms"] = _fmt_ms
    env.filters["num"] = _fmt_num
    env.filters["when"] = _fmt_when
    env.filters["slug"] = _slug
    env.globals |= {"fault_label": fault_label, "fault_verdict": fault_verdict}
    return env.get_template("report.html.j2").render(s=summary, t=tables, fig=figures, Markup=jinja2.utils.markupsafe.Markup)


# ---------------------------------------------------------------------------------------------

def _capacity(frames: Frames, name: str, ev: pd.DataFrame, cfg_block: ConfigBlock, thresholds: dict[str, float],
              imbalance: float | None, cells: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame | None, C.USLFit | None,
                                                                      dict[str, Any]]:
    """capacity (summary.json), the stage stats and USL fit its figure draws, and what analysis.resources
    reads on: {"windows", "knee", "plan"} (empty without a step load)."""
    nodes = _int(cfg_block.nodes) or 1
    e = ev[ev["config"] == name]
    users = _users_series(frames, name, e)
    windows = C.step_windows(users, levels=_load_levels(frames.meta.get(name) or {}))
    if len(windows) < 2:
        return ({"stages": int(len(windows)), "users_per_node": None, "users": None, "usl": None, "nodes_needed": None,
                 "note": "one load level only: run a step load ([load] steps) to find the knee"}, None, None,
                {"windows": windows})
    gen = frames.generator[frames.generator["config"] == name] if len(frames.generator) else None
    stats = C.step_stats(e, windows, nodes, gen, cells[cells["config"] == name] if len(cells) else cells)
    k = C.knee(stats, thresholds)
    fit = None
    usl: dict[str, Any] | None = None
    # A generator-bound stage's throughput is the generator's: fit the servers' curve without it.
    fit_stats = stats[~stats["generator_bound"].astype(bool)]
    if len(fit_stats) >= 3 and (fit_stats["throughput"] > 0).sum() >= 3:
        try:
            fit = C.fit_usl(fit_stats["users"], fit_stats["throughput"])
            usl = fit.as_dict()
        except ValueError as err:
            usl = {"error": str(err)}
    elif len(fit_stats) < len(stats):
        usl = {"error": f"only {len(fit_stats)} stage(s) not generator-bound: too few to fit"}
    if usl and "error" not in usl and k["generator_bound_stages"]:
        usl["notes"] = [*usl.get("notes", []), "generator-bound stage(s) "
                        + ", ".join(str(x) for x in k["generator_bound_stages"]) + " left out of the fit"]
    # No stage broke the SLO (or the generator saturated first): the knee lies beyond, so the capacity
    # is a lower bound, node counts are upper bounds, and a USL fit of an unsaturated ramp only extrapolates.
    reached = k["first_failing_stage"] is not None
    if not reached and usl and "error" not in usl:
        usl["meaningful"] = False
        usl["notes"] = [*usl.get("notes", []), "no stage broke the SLO: the system was not saturated, so α, β "
                        "and the peak extrapolate beyond the data; raise the steps until a stage fails"]
    # per-node capacity = the busiest node's load at the knee; the imbalance is applied once (capacity_plan)
    plan = C.capacity_plan(k, nodes, imbalance, TARGET_USERS)
    return ({"stages": int(len(stats)), "users_per_node": k["users_per_node"], "users": k["users"],
             "reached": reached, "generator_stage": k["generator_stage"],
             "generator_bound_stages": k["generator_bound_stages"],
             "generator_known": bool(gen is not None and len(gen)),
             "generator_cpu_max_hold": num(stats["generator_cpu_max"].max()) if len(stats) else None,
             "limit": k["limit"], "slo": k["slo"], "note": k.get("note"), "table": k["stages"], "usl": usl,
             "capacity_per_node": plan["capacity_per_node"], "imbalance_at_knee": plan["imbalance"],
             "imbalance_source": plan["imbalance_source"], "headroom": plan["headroom"],
             "nodes_needed": plan["nodes_needed"], "nodes_needed_even": plan["nodes_needed_even"],
             "assumptions": list(C.NODES_NEEDED_ASSUMPTIONS)}, stats, fit, {"windows": windows, "knee": k, "plan": plan})


def _load_levels(meta: dict[str, Any]) -> list[Any]:
    """The user counts the run was asked to hold (meta.json load): each step's, or the one `users` of a constant
    load, whose ramp's pauses are no stages either. Empty for a run whose meta.json does not say."""
    load = meta.get("load") if isinstance(meta.get("load"), dict) else {}
    steps = load.get("steps")
    if isinstance(steps, list) and steps:
        return [s.get("users") for s in steps if isinstance(s, dict)]
    return [load["users"]] if isinstance(load.get("users"), int) and not isinstance(load.get("users"), bool) else []


def _status(meta: dict[str, Any], r: pd.Series, issues: list[dict[str, Any]]) -> RunStatus:
    """The config's status, reconciled now (contract.status): what meta.json says, whether its writer still
    lives, what the run's files say; plus what only the loaded data can tell (no meta.json, no rows, rows
    the loader dropped as impossible or duplicated: the figures exclude them, so they cover less)."""
    d = r.get("dir")
    rs = reconcile(meta, Path(d) if isinstance(d, str) and d else None)
    for file in dict.fromkeys(str(i.get("file")) for i in issues):
        mine = [i for i in issues if str(i.get("file")) == file]
        dropped = sum(int(i.get("count") or 0) for i in mine if i.get("action") == "dropped")
        blanked = sum(int(i.get("count") or 0) for i in mine if i.get("action") != "dropped")
        rs.add(Status.DEGRADED, f"{file}: the loader dropped {dropped} impossible or duplicated row(s) and blanked "
                                f"{blanked} impossible value(s); the figures exclude them (see the warnings)")
    n = int(r.get("n_events") or 0)
    if not meta:
        rs.add(Status.FAILED if not n else Status.DEGRADED,
               "no readable meta.json: whether the run finished, and what it ran against, is unknown")
    if rs.status == Status.FAILED and not rs.reasons:
        rs.add(Status.FAILED, str(r.get("error") or "run marked failed in meta.json (no reason given)"))
    if not n and rs.status in (Status.OK, Status.DEGRADED):
        rs.add(Status.FAILED, "no event rows: nothing was measured")
    return rs


def _fault_marks(frames: Frames) -> list[tuple[float, str]]:
    """The faults applied (meta.json `faults` with a `ts`), as (s since the config's first event, label),
    one mark per distinct (time, label) over the configs: what the time series must be read against."""
    t0 = _first_ts(frames.runs)
    marks: set[tuple[float, str]] = set()
    for name, meta in frames.meta.items():
        for f in (meta or {}).get("faults") or ():
            if isinstance(f, dict) and isinstance(f.get("ts"), (int, float)) and str(name) in t0 and not f.get("error"):
                label = f"{f.get('action')}{' ' + str(f['target']) if f.get('target') else ''}"
                marks.add((round(float(f["ts"]) - t0[str(name)]), label))
    return sorted(marks)


def _first_ts(runs: pd.DataFrame) -> dict[str, float]:
    """Each config's first event time: the t = 0 of every over-time plot."""
    return {str(r["config"]): float(r["first_ts"]) for _, r in runs.iterrows()
            if "first_ts" in r and r["first_ts"] is not None and not math.isnan(float(r["first_ts"]))}


def _users_series(frames: Frames, name: str, e: pd.DataFrame) -> pd.DataFrame:
    h = frames.locust_history
    if len(h) and {"config", "Timestamp", "User Count", "Name"} <= set(h.columns):
        a = h[(h["config"] == name) & (h["Name"] == "Aggregated")]
        if len(a):
            return pd.DataFrame({"ts": pd.to_numeric(a["Timestamp"], errors="coerce"),
                                 "users": pd.to_numeric(a["User Count"], errors="coerce")}).dropna()
    au = M.active_users(e)
    if not len(au):
        return pd.DataFrame(columns=["ts", "users"])
    t0 = math.floor(float(e["ts"].min()))  # active_users counts from the start of the first second
    return pd.DataFrame({"ts": au["t"] + t0, "users": au["active"]})


def _checks(entry: ConfigEntry, th: dict[str, float]) -> dict[str, CheckOutcome]:
    """The config's threshold checks by analysis.checks.evaluate: the one definition `sioscale check` uses,
    so the page, summary.json and the exit code agree (same value, same verdict, same sentence)."""
    from analysis.checks import FIGURES, evaluate
    from contract.config import Thresholds

    active = {k: v for k, v in th.items() if k in FIGURES}
    if not active:
        return {}
    out = {}
    for r in evaluate({"configs": [_jsonable(entry.to_json())]}, Thresholds(**active)):  # judged as summary.json has it
        out[r.threshold] = CheckOutcome(value=r.value, limit=r.limit, kind=FIGURES[r.threshold][1],
                                        label=FIGURES[r.threshold][2], passed=None if r.skipped else r.passed,
                                        skipped=r.skipped or None, missing=r.missing or None, text=r.describe())
    return out


def _slo_used(th: dict[str, float], source: str | None) -> dict[str, Any]:
    """The capacity SLO as capacity.knee applies it, and per key whether it came from the thresholds."""
    return {"values": {k: th.get(k, v) for k, v in C.DEFAULT_SLO.items()},
            "from": {k: ("thresholds" if k in th else "default") for k in C.DEFAULT_SLO},
            "thresholds_source": source if th else None}


def _config_block(meta: dict[str, Any], r: pd.Series) -> ConfigBlock:
    c = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    tr = c.get("transports")
    if isinstance(tr, str):
        tr = tr.replace("+", ",").split(",")
    return ConfigBlock(balancer=c.get("balancer"), policy=c.get("policy"), adapter=c.get("adapter"),
                       transports=list(tr) if isinstance(tr, list | tuple) else [], server=c.get("server"),
                       nodes=_int(c.get("nodes")), tls=bool(c.get("tls")) if c.get("tls") is not None else None)


OPTION_KEYS = ("recovery", "idle_timeout", "ping_interval", "http_protocol")
"""Labels beyond summary.json's pinned `config` keys (contract.config.LABEL_KEYS), under `options`."""


def _options(meta: dict[str, Any]) -> dict[str, Any]:
    """`options`: recovery, idle_timeout, ping_interval, http_protocol ("h2" | "http/1.1") as meta.json's
    config has them (None: not set / older run / unknown behind --url)."""
    c = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    out = {k: c.get(k) if isinstance(c.get(k), bool | int | float) else None for k in OPTION_KEYS}
    out["http_protocol"] = c.get("http_protocol") if c.get("http_protocol") in ("h2", "http/1.1") else None
    return out


def _environment(frames: Frames) -> dict[str, Any]:
    per = {}
    for name, m in frames.meta.items():
        per[name] = {k: m.get(k) for k in ("versions", "machine", "locust_command", "started", "ended", "cluster_info")
                     if m.get(k) is not None}
    return {"report_python": sys.version.split()[0], "report_platform": platform.platform(),
            "pandas": pd.__version__, "runs": per}


def _thresholds(th: Any) -> dict[str, float]:
    if th is None:
        return {}
    if is_dataclass(th):
        th = asdict(th)
    return {k: float(v) for k, v in dict(th).items() if v is not None}


def _default_title(run_dirs: Any) -> str:
    dirs = [Path(d) for d in run_dirs]
    if dirs and all(d.parent.name == "runs" for d in dirs):
        return f"sioscale report — {dirs[0].parent.parent.name}"
    return "sioscale report"


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _lat(row: pd.Series) -> Latency:
    return Latency(p50=num(row["p50"]), p95=num(row["p95"]), p99=num(row["p99"]), max=num(row["max"]),
                   count=int(row["count"]))


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.bool_ | bool):
        return bool(o)
    if isinstance(o, np.integer | np.floating | float | int):
        return num(o)
    if isinstance(o, str) or o is None:
        return o
    return str(o)


def _fmt_pct(x: Any) -> str:
    x = num(x)
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if 0 < 100 * x < 99.95 and abs(100 * x - round(100 * x)) >= 0.05 else f"{100 * x:.0f}%"


def _fmt_ms(x: Any) -> str:
    x = num(x)
    return "n/a" if x is None else (f"{x:.1f}" if x < 100 else f"{x:.0f}")


def _fmt_when(x: Any) -> str:
    """An epoch time (meta.json started/ended) as UTC; anything else as given."""
    if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x):
        try:
            return _dt.datetime.fromtimestamp(x, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (OverflowError, OSError, ValueError):
            pass
    return "?" if x is None else str(x)


def _fmt_num(x: Any, digits: int = 3) -> str:
    x = num(x)
    if x is None:
        return "n/a"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}g}"
