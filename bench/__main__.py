"""`python -m bench [--quick] [--only a,d]`: run the measurements, print a table, write
bench/results.json, and append a full run's figures to bench/HISTORY.md."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import delivery, fanout, latency, pgbench, plot, reads, stream, triggers, writes
from bench import fanout_shape as fanout_shape_experiment
from bench.env import BenchServer, bench_server, git_commit

HERE = Path(__file__).resolve().parent
SECTIONS: dict[str, Callable[[BenchServer, bool, Path], dict[str, Any]]] = {
    "fanout": fanout.run,  # a, b, c
    "latency": latency.run,  # d
    "writes": writes.run,  # e
    "reads": reads.run,  # f
    "delivery": delivery.run,  # g
    "stream": stream.run,  # h
    "pgbench": pgbench.run,  # i
}
# Experiments: run with --only NAME, never part of the default run.
EXPERIMENTS: dict[str, Callable[[BenchServer, bool, Path], dict[str, Any]]] = {
    "triggers": triggers.run,
    "fanout_shape": fanout_shape_experiment.run,
}
TARGETS = {
    "speedup_vs_seed": 100.0,
    "fanout_1m_s": 5.0,
    "ratio_to_floor": 4.0,
    "latency_p99_ms": 25.0,
    "write_ratio": 0.8,
    "reads_p99_ms": 25.0,
    "webhook_per_s": 500.0,
    "webhook_slow_per_s": 200.0,
    "stream_p99_ms": 100.0,
    "stream_idle_p99_ratio": 1.5,
    "pgbench_on_ratio": 0.85,
    "pgbench_lag_p99_ms": 15.0,
    "drain_events_per_s": 20_000.0,
}


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measurement, value, target) lines for the table and HISTORY.md."""
    out: list[tuple[str, str, str]] = []

    def ok(good: bool) -> str:
        return "ok" if good else "MISSED"

    if "fanout" in results:
        f = results["fanout"]
        seed = f["seed"]
        out.append(
            (
                f"c. seed baseline ({seed['subscribers']:,} subscribers)",
                f"{_fmt(seed['rows_per_s'])} rows/s",
                "",
            )
        )
        d = f.get("deliveries")
        if d:
            out.append(
                (
                    f"d. fan-out {d['recipients']:,} with e-mail on for all vs without",
                    f"{d['with_email_for_all_s']:.3f} s vs {d['without_deliveries_s']:.3f} s"
                    f" = {d['ratio']:.2f}x",
                    f"<= 1.6x {ok(d['ratio'] <= 1.6)}",
                )
            )
        for s in f["stages"]:
            n = s["subscribers"]
            tgt = ""
            if n == 1_000_000:
                tgt = f"<= {TARGETS['fanout_1m_s']:g} s {ok(s['wall_s'] <= TARGETS['fanout_1m_s'])}"
            out.append(
                (
                    f"a. fan-out {n:,} via listener (commit -> rows visible)",
                    f"{s['wall_s']:.3f} s (db {s['db_s']:.3f} s), {_fmt(s['rows_per_s'])} rows/s",
                    tgt,
                )
            )
            out.append(
                (
                    f"a/c. speed-up vs seed at {n:,}",
                    f"{s['speedup_vs_seed']:,.0f}x",
                    f">= 100x {ok(s['speedup_vs_seed'] >= TARGETS['speedup_vs_seed'])}",
                )
            )
            out.append(
                (
                    f"b. {n:,}: function / INSERT..SELECT / no-index floor",
                    f"{s['direct_function_s']:.3f} / {s['direct_insert_select_s']:.3f}"
                    f" / {s['floor_s']:.3f} s",
                    "",
                )
            )
            out.append(
                (
                    f"b. {n:,}: fan-out / floor",
                    f"{s['ratio_to_floor']:.2f}x (INSERT..SELECT alone"
                    f" {s['insert_select_ratio_to_floor']:.2f}x)",
                    f"<= 4x {ok(s['ratio_to_floor'] <= TARGETS['ratio_to_floor'])}",
                )
            )
        stages = f["stages"]
        sizes = " / ".join(plot.short_count(s["subscribers"]) for s in stages)
        out.append(
            (
                f"a. growth: fan-out at {sizes} (commit -> rows visible)",
                " / ".join(f"{s['wall_s']:.3g}" for s in stages) + " s",
                "",
            )
        )
        out.append(
            (
                f"a. growth: microseconds per recipient at {sizes}",
                " / ".join(f"{s['wall_s'] * 1e6 / s['subscribers']:.2f}" for s in stages),
                "",
            )
        )
        out.append(
            (
                f"b. growth: fan-out / floor at {sizes}",
                " / ".join(f"{s['ratio_to_floor']:.2f}x" for s in stages)
                + " (floor "
                + " / ".join(f"{s['floor_s']:.3g}" for s in stages)
                + " s)",
                "",
            )
        )
    if "latency" in results:
        d = results["latency"]
        out.append(
            (
                f"d. latency {d['rate_achieved']:.0f} ev/s x {d['subscribers']} subs,"
                f" {d['seconds']:g} s",
                f"p50 {d['p50_ms']:.1f} / p95 {d['p95_ms']:.1f} / p99 {d['p99_ms']:.1f} ms"
                f" (max {d['max_ms']:.0f})",
                f"p99 <= 25 ms {ok(d['p99_ms'] <= TARGETS['latency_p99_ms'])}",
            )
        )
        out.append(
            (
                "d. wall clock commit -> visible (every 10th event)",
                f"p50 {d['wall_p50_ms']:.1f} / p99 {d['wall_p99_ms']:.1f} ms",
                "",
            )
        )
    if "writes" in results:
        e = results["writes"]
        out.append(
            (
                f"e. inserts/s, {e['writers']} writers: triggers off / on",
                f"{_fmt(e['off_median'])} / {_fmt(e['on_median'])} -> ratio {e['ratio']:.2f}",
                f">= 0.8 {ok(e['ratio'] >= TARGETS['write_ratio'])}",
            )
        )
        out.append(
            (
                "e. the same, triggers on, a listener draining on the same 2 cores",
                f"{_fmt(statistics.median(e['with_listener_per_s']))}"
                f" -> ratio {e['with_listener_ratio']:.2f}",
                "",
            )
        )
        if "notify_share_on" in e:
            out.append(
                (
                    "e. writes that sent a NOTIFY: no listener / a listener draining",
                    f"{e['notify_share_on']:.1%} / {e['notify_share_with_listener']:.1%}",
                    "",
                )
            )
    if "reads" in results:
        r = results["reads"]
        out.append(
            (
                f"f. reads via {r['mode']}: {r['notifications']:,} rows, {r['users']:,} users,"
                f" {r['clients']} clients",
                "",
                "",
            )
        )
        for name, m in r["queries"].items():
            out.append(
                (
                    f"f. {name}",
                    f"p50 {m['p50_ms']:.1f} / p99 {m['p99_ms']:.1f} ms, {_fmt(m['per_s'])} req/s",
                    f"p99 <= 25 ms {ok(m['p99_ms'] <= TARGETS['reads_p99_ms'])}",
                )
            )
        growth = r.get("growth", [])
        if len(growth) > 1:
            sizes = " / ".join(plot.short_count(g["notifications"]) for g in growth)
            out.append(
                (
                    f"f. growth: rows {sizes} (the same shape, scaled)",
                    " -> ".join(
                        f"{plot.short_count(g['users'])} users, heavy user"
                        f" {plot.short_count(g['heavy_user_notifications'])} (half unread)"
                        for g in growth
                    ),
                    "",
                )
            )
            for kind in growth[0]["queries"]:
                label = kind.replace("unread count", "badge (unread count)")
                out.append(
                    (
                        f"f. growth: {label}, p50 / p99 at {sizes}",
                        " -> ".join(
                            f"{g['queries'][kind]['p50_ms']:.1f} / {g['queries'][kind]['p99_ms']:.1f}"
                            for g in growth
                        )
                        + " ms",
                        "",
                    )
                )
        # Row-level security's cost: the same SQL as the table owner and as the API's role.
        rls = r.get("rls", {})
        without, with_ = rls.get("owner, no RLS", {}), rls.get("notifications_api, RLS", {})
        for name, m in with_.items():
            base = without.get(name)
            if base is None:
                continue
            out.append(
                (
                    f"f. RLS cost (SQL), {name}",
                    f"p50 {base['p50_ms']:.2f} -> {m['p50_ms']:.2f} ms,"
                    f" {_fmt(base['per_s'])} -> {_fmt(m['per_s'])} req/s",
                    "",
                )
            )
    if "delivery" in results:
        g = results["delivery"]
        for key, what, target in (
            ("fast", "receiver answering at once", "webhook_per_s"),
            ("slow", "receiver answering after 200 ms", "webhook_slow_per_s"),
        ):
            t, seed = g[key], g[f"seed_{key}"]
            out.append(
                (
                    f"g. webhooks, 1 deliverer, {t['deliveries']:,} pending, {what}",
                    f"{_fmt(t['per_s'])} deliveries/s ({t['seconds']:.2f} s; deliverer CPU"
                    f" {t['deliverer_cpu_s'] * 1000 / t['deliveries']:.1f} ms each)",
                    f">= {TARGETS[target]:g}/s {ok(t['per_s'] >= TARGETS[target])}",
                )
            )
            out.append(
                (
                    f"g. the same, seed design: 1 at a time, new connection each"
                    f" ({seed['deliveries']})",
                    f"{_fmt(seed['per_s'])} deliveries/s -> deliverer {g[f'{key}_vs_seed']:,.1f}x",
                    "",
                )
            )
        lat = g["latency"]
        out.append(
            (
                f"g. commit -> webhook at the receiver, {lat['rate_achieved']:.0f} ev/s,"
                f" {lat['seconds']:g} s (listener + deliverer)",
                f"p50 {lat['p50_ms']:.1f} / p95 {lat['p95_ms']:.1f} / p99 {lat['p99_ms']:.1f} ms"
                f" (max {lat['max_ms']:.0f})",
                "",
            )
        )
        out.append(
            (
                "g. occurred_at -> delivered_at recorded (database clock)",
                f"p50 {lat['recorded_p50_ms']:.1f} / p99 {lat['recorded_p99_ms']:.1f} ms",
                "",
            )
        )
    if "stream" in results:
        h = results["stream"]
        p, j, q, w = h["push"], h["json"], h["polling"], h["write_only"]

        def cpu(c: dict[str, float]) -> str:
            names = ("serve", "postgres", "listener", "client", "others")
            return " / ".join(f"{c[n]:.2f}" if n in c else "-" for n in names)

        out.append(
            (
                f"h. stream: {p['streams']:,} streams, {p['rate_achieved']:.0f} ev/s,"
                f" {p['seconds']:g} s: fan-out -> received",
                f"p50 {p['fanout_p50_ms']:.1f} / p95 {p['fanout_p95_ms']:.1f}"
                f" / p99 {p['fanout_p99_ms']:.1f} ms (max {p['fanout_max_ms']:.0f})",
                f"p99 <= 100 ms {ok(p['fanout_p99_ms'] <= TARGETS['stream_p99_ms'])}",
            )
        )
        out.append(
            (
                "h. stream: the writer's COMMIT -> received",
                f"p50 {p['commit_p50_ms']:.1f} / p95 {p['commit_p95_ms']:.1f}"
                f" / p99 {p['commit_p99_ms']:.1f} ms (max {p['commit_max_ms']:.0f})",
                "",
            )
        )
        out.append(
            (
                "h. stream: notifications received / expected (each once)",
                f"{p['received']:,} / {p['expected']:,}: {p['missing']:,} missing,"
                f" {p['duplicates']:,} duplicates, {p['failed_streams']} streams failed",
                "exact ok" if p["exact"] else "exact FAIL",
            )
        )
        out.append(
            (
                "h. stream: per event, first / last stream to get it (from fan-out), p50",
                f"{p['first_stream_p50_ms']:.1f} / {p['last_stream_p50_ms']:.1f} ms"
                f" (client loop lag p99 {p['loop_lag_p99_ms']:.1f} ms,"
                f" {p['client_cpu_us_per_message']:.0f} us CPU per SSE message)",
                "",
            )
        )
        srv = p["server"]
        out.append(
            (
                "h. stream: server side, fan-out -> queued (hub, after its round)",
                f"mean {srv['queued']['mean_ms']:.1f} ms, p99 <= {srv['queued']['p99_bound_ms']:g}"
                f" ms; {srv['rounds']['count']:.0f} rounds, mean {srv['rounds']['mean_ms']:.1f} ms",
                "",
            )
        )
        out.append(
            (
                "h. stream: CPU s/s serve / postgres / listener / client / others",
                f"{cpu(p['cpu'])} (write load alone {cpu(w['cpu'])})",
                "",
            )
        )
        for kind, ratio in j["p99_ratio"].items():
            a, b = j["no_streams"][kind], j["idle_streams"][kind]
            out.append(
                (
                    f"h. JSON {kind}, {j['clients']} clients: no stream vs"
                    f" {j['streams']:,} idle streams",
                    f"p50 {a['p50_ms']:.1f} -> {b['p50_ms']:.1f}, p99 {a['p99_ms']:.1f}"
                    f" -> {b['p99_ms']:.1f} ms = {ratio:.2f}x",
                    f"p99 <= 1.5x {ok(ratio <= TARGETS['stream_idle_p99_ratio'])}",
                )
            )
        out.append(
            (
                f"h. baseline: {q['pollers']} inboxes polling every {q['interval_s']:g} s,"
                " COMMIT -> seen",
                f"p50 {q['commit_p50_ms']:,.0f} / p99 {q['commit_p99_ms']:,.0f} ms"
                f" ({q['missing']} never on a first page) -> polling/stream p50"
                f" {h['polling_to_stream_p50']:,.0f}x",
                "",
            )
        )
        per_tab = q["http_per_s"] / q["pollers"]
        out.append(
            (
                "h. HTTP requests/s: polling (per 1,000 tabs) vs stream",
                f"{q['http_per_s']:,.0f} ({per_tab * 1000:,.0f}) vs 0 once open",
                "",
            )
        )
        out.append(
            (
                "h. database: polling xacts/s beyond the write load (per 1,000 tabs)"
                " vs stream rounds/s",
                f"{h['polling_xacts_per_s']:,.0f}"
                f" ({h['polling_xacts_per_s'] * 1000 / q['pollers']:,.0f})"
                f" vs {srv['rounds_per_s']:.1f} for {p['streams']:,} streams",
                "",
            )
        )
        out.append(
            (
                "h. polling: CPU s/s serve / postgres / listener / client / others",
                cpu(q["cpu"]),
                "",
            )
        )
    if "pgbench" in results:
        i = results["pgbench"]
        tps = i["tps"]
        out.append(
            (
                f"i. pgbench ({i['pgbench_version']}), {i['clients']} clients, mix"
                f" {'/'.join(str(w) for w in i['mix'].values())}: tps off / on / on+2 listeners",
                f"{_fmt(statistics.median(tps['off']))} / {_fmt(statistics.median(tps['on']))}"
                f" / {_fmt(statistics.median(tps['listeners']))}"
                f" -> {i['on_ratio']:.2f} / {i['listeners_ratio']:.2f}",
                f"on >= 0.85 {ok(i['on_ratio'] >= TARGETS['pgbench_on_ratio'])}",
            )
        )
        for name, m in i["per_script"].items():
            out.append(
                (
                    f"i. pgbench {name} alone: tps off / on",
                    f"{_fmt(statistics.median(m['off_tps']))}"
                    f" / {_fmt(statistics.median(m['on_tps']))} -> {m['ratio']:.2f}",
                    "",
                )
            )
        out.append(
            (
                f"i. lag under that load with 2 listeners ({i['lag_events']:,} events)",
                f"p50 {i['lag_p50_ms']:.1f} / p99 {i['lag_p99_ms']:.1f} ms",
                f"p99 <= 15 ms {ok(i['lag_p99_ms'] <= TARGETS['pgbench_lag_p99_ms'])}",
            )
        )
        out.append(
            (
                f"i. drain: {i['drain_events']:,} events x 5 recipients, one listener",
                f"{_fmt(i['drain_events_per_s'])} events/s ({i['drain_seconds']:.2f} s)",
                f">= 20,000/s {ok(i['drain_events_per_s'] >= TARGETS['drain_events_per_s'])}",
            )
        )
    if "fanout_shape" in results:
        out += fanout_shape_experiment.rows(results["fanout_shape"])
    if "triggers" in results:
        t = results["triggers"]
        for label, m in t.items():
            if isinstance(m, dict):
                out.append(
                    (
                        f"triggers: pgbench inserts, {label} / off",
                        f"{_fmt(statistics.median(m['on_tps']))}"
                        f" / {_fmt(statistics.median(m['off_tps']))} tps -> {m['ratio']:.2f}",
                        f"server CPU {m['on_cpu_us']:.0f} / {m['off_cpu_us']:.0f} us/txn"
                        if "on_cpu_us" in m
                        else "",
                    )
                )
    return out


def table(lines: list[tuple[str, str, str]]) -> str:
    w0 = max(len(a) for a, _, _ in lines)
    w1 = max(len(b) for _, b, _ in lines)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in lines)


def append_history(results: dict[str, Any], lines: list[tuple[str, str, str]]) -> None:
    path = HERE / "HISTORY.md"
    if not path.exists():
        path.write_text("# Bench history (full runs only)\n\nWritten by `make bench`.\n")
    meta = results["meta"]
    body = [
        "",
        f"## {meta['date']} commit {meta['commit']}",
        "",
        f"{meta['seconds']:.0f} s run; server {meta['server']['server_version']},"
        f" synchronous_commit={meta['server'].get('synchronous_commit')},"
        f" fsync={meta['server'].get('fsync')}",
        "",
        "| measurement | value | target |",
        "| --- | --- | --- |",
        *(f"| {a} | {b} | {c} |" for a, b, c in lines),
        "",
    ]
    with path.open("a") as f:
        f.write("\n".join(body))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs (< 2 min)")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--server-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra setting for the embedded server (to try settings; not for HISTORY)",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    runnable = {**SECTIONS, **EXPERIMENTS}
    unknown = [s for s in only if s not in runnable]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(runnable)}")
    extra: dict[str, str] = {}
    for item in args.server_setting:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--server-setting wants NAME=VALUE, not {item!r}")
        extra[name.strip()] = value.strip()

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    results: dict[str, Any] = {}
    with bench_server(extra) as server:
        log = server.workdir / "listener.log"
        for name in only:
            t0 = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            results[name] = runnable[name](server, args.quick, log)
            print(
                f"[bench] {name} done in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            results[name]["section_seconds"] = time.perf_counter() - t0
        settings = server.settings
        embedded = server.embedded
    results["meta"] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "quick": args.quick,
        "sections": only,
        "embedded": embedded,
        "server": settings,
        "extra_settings": extra,
        "seconds": time.perf_counter() - started,
    }
    lines = rows(results)
    print(table(lines))
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.output}", file=sys.stderr)
    png = plot.write(results, args.output.with_name("growth.png"))
    if png is not None:
        print(f"wrote {png}", file=sys.stderr)
    if not args.quick and only == list(SECTIONS) and not extra:
        append_history(results, lines)
        print(f"appended to {HERE / 'HISTORY.md'}", file=sys.stderr)
    if "stream" in results and not results["stream"]["push"]["exact"]:
        print("FAIL: the streams did not get every notification exactly once", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
