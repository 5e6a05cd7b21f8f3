"""Operations: health and readiness, metrics, JSON logs, retention, the systemd units."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from psycopg import errors

from notifications.api import database
from tests.cli import run_cli, start_cli
from tests.conftest import build_app, wait_until

Conn = psycopg.Connection[Any]
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def api(database_url: str) -> Iterator[Flask]:
    app = build_app(database_url, api_pool_size=2)
    try:
        yield app
    finally:
        database.close(app)


def samples(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{label="v"}': value}."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return found


def scrape(app: Flask) -> dict[str, float]:
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- health and readiness --------------------------------------------------------------------


def test_readyz_is_503_until_migrated(empty_database_url: str) -> None:
    with api(empty_database_url) as app:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["status"] == "unavailable"
        # /metrics still answers, and says the database part is missing.
        assert scrape(app)["notifications_db_up"] == 0


def test_readyz_is_200_when_migrated(database_url: str) -> None:
    from notifications.migrate import head_revision

    with api(database_url) as app:
        response = app.test_client().get("/readyz")
        assert response.status_code == 200
        assert response.get_json() == {"status": "ready", "revision": head_revision()}


@pytest.mark.parametrize(
    ("revision", "status"),
    [
        (None, 503),  # an empty alembic_version: never migrated
        ("9999_from_a_newer_release", 200),  # migrated ahead of this code: still compatible
    ],
)
def test_readyz_and_the_database_revision(
    database_url: str, db: Conn, revision: str | None, status: int
) -> None:
    db.execute("DELETE FROM alembic_version")
    if revision is not None:
        db.execute("INSERT INTO alembic_version VALUES (%s)", [revision])
    with api(database_url) as app:
        response = app.test_client().get("/readyz")
    assert response.status_code == status, response.get_json()


def test_readyz_is_503_when_the_database_is_gone() -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    with api(url) as app:
        client = app.test_client()
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_after_a_fan_out(
    database_url: str,
    db: Conn,
    make_user: Callable[..., int],
    start_listener: Callable[..., Any],
) -> None:
    alice = make_user("alice")
    make_user("bob")
    make_user("carol")
    with api(database_url) as app:
        # Backlog seen from the database, before any listener runs.
        db.execute(
            "INSERT INTO test_scenarios (name, created_by) VALUES ('A', %s), ('B', %s)",
            [alice, alice],
        )
        db.execute("UPDATE scenario_events SET occurred_at = now() - interval '90 seconds'")
        before = scrape(app)
        assert before["notifications_db_up"] == 1
        assert before["notifications_db_backlog_events"] == 2
        assert before["notifications_db_backlog_oldest_age_seconds"] >= 90
        assert before["notifications_db_listeners"] == 0

        start_listener()
        wait_until(
            lambda: (
                db.execute("SELECT unprocessed_events FROM notification_backlog").fetchone() == (0,)
            )
        )
        after = scrape(app)
    assert after["notifications_db_backlog_events"] == 0
    assert after["notifications_db_backlog_oldest_age_seconds"] == 0
    assert after["notifications_db_listeners"] == 1
    # The listener ran in this process: its counters are in the same exposition.
    processed = "notifications_events_processed_total"
    assert after[processed] - before.get(processed, 0) == 2
    written = "notifications_written_total"
    assert after[written] - before.get(written, 0) == 4  # 2 events x (bob, carol)
    lag = "notifications_event_lag_seconds_count"
    assert after[lag] - before.get(lag, 0) == 2
    assert after["notifications_batch_duration_seconds_count"] >= 1


@pytest.fixture
def listener_process(
    database_url: str, tmp_path: Path
) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Path]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"listener-{len(started)}.log"
        with log.open("wb") as err:
            proc = start_cli(
                "listen", database_url=database_url, env=env, stdout=subprocess.DEVNULL, stderr=err
            )
        started.append(proc)
        return proc, log

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_listener_metrics_port_and_json_logs(
    db: Conn,
    make_user: Callable[..., int],
    listener_process: Callable[..., tuple[subprocess.Popen[bytes], Path]],
) -> None:
    alice = make_user("alice")
    bob = make_user("bob")
    port = free_port()
    proc, log = listener_process(
        LISTENER_METRICS_PORT=str(port), LOG_FORMAT="json", LOG_LEVEL="DEBUG", POLL_INTERVAL="0.5"
    )

    def metrics() -> dict[str, float] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return samples(r.read().decode())
        except OSError:
            return None

    wait_until(metrics, timeout=15)
    db.execute(
        "INSERT INTO test_scenarios (name, created_by) SELECT 'S' || g, %s"
        " FROM generate_series(1, 3) g",
        [alice],
    )
    event_ids = [r[0] for r in db.execute("SELECT id FROM scenario_events ORDER BY id")]
    scraped = wait_until(
        lambda: (
            (m := metrics())
            and m.get("notifications_events_processed_total") == 3
            # The gauge is refreshed once the drain that processed them has found nothing more.
            and m.get("notifications_backlog_events") == 0
            and m
        ),
        timeout=15,
    )
    assert scraped["notifications_written_total"] == 3  # bob, three times
    assert scraped["notifications_event_lag_seconds_count"] == 3
    assert scraped["notifications_batch_duration_seconds_count"] >= 1
    assert scraped["notifications_backlog_events"] == 0
    assert db.execute(
        "SELECT count(*) FROM user_notifications WHERE user_id = %s", [bob]
    ).fetchone() == (3,)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0

    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    # No terminal colours in a log file (uvicorn attaches a coloured copy of its messages).
    assert not any("\x1b[" in json.dumps(r, ensure_ascii=False) for r in records)
    batches = [r for r in records if "event_ids" in r]
    assert sorted(i for r in batches for i in r["event_ids"]) == event_ids
    per_event = sorted(r["event_id"] for r in records if "event_id" in r)
    assert per_event == event_ids
    assert any(r["message"] == "listener stopped" for r in records)


def test_listener_metrics_port_in_use_is_a_one_line_error(
    listener_process: Callable[..., tuple[subprocess.Popen[bytes], Path]],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, log = listener_process(LISTENER_METRICS_PORT=str(port), LOG_LEVEL="WARNING")
        assert proc.wait(timeout=20) == 1
    assert log.read_text() == (
        f"notifications: error: LISTENER_METRICS_PORT {port}: Address already in use\n"
    )


def test_serve_lines_are_json_too(database_url: str, tmp_path: Path) -> None:
    """With LOG_FORMAT=json, uvicorn's own lines (its supervisor's, its workers' start-up and
    shutdown, the access log) are JSON objects like every other line, and SIGTERM stops the
    whole process tree gracefully with status 0."""
    port = free_port()

    def healthz() -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return int(r.status)
        except OSError:
            return None

    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        # Two workers, as deployed: the supervisor and each worker log on their own.
        proc = start_cli(
            *["serve", "--port", str(port), "--workers", "2"],
            database_url=database_url,
            env={"LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "API_POOL_SIZE": "2"},
            stdout=stdout,
            stderr=stderr,
        )
    try:
        assert wait_until(healthz, timeout=60, interval=0.1) == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert out.read_text() == ""
    records = [json.loads(line) for line in err.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    # No terminal colours in a log file (uvicorn attaches a coloured copy of its messages).
    assert not any("\x1b[" in json.dumps(r, ensure_ascii=False) for r in records)
    said = [(r["logger"], r["message"]) for r in records]
    running = f"Uvicorn running on http://127.0.0.1:{port} "
    assert any(logger == "uvicorn.error" and m.startswith(running) for logger, m in said)
    assert said.count(("uvicorn.error", "Application startup complete.")) == 2
    assert any(
        logger == "uvicorn.access" and m.endswith('"GET /healthz HTTP/1.1" 200')
        for logger, m in said
    )
    assert ("uvicorn.error", "Received SIGTERM, exiting.") in said
    assert said.count(("uvicorn.error", "Application shutdown complete.")) == 2


def test_bad_log_level_is_a_one_line_error(database_url: str) -> None:
    result = run_cli("backlog", database_url=database_url, LOG_LEVEL="loud")
    assert result.returncode == 1
    assert result.stderr.startswith("notifications: error: LOG_LEVEL must be one of")
    assert result.stderr.count("\n") == 1


# -- retention -------------------------------------------------------------------------------


@pytest.fixture
def aged_notifications(
    db: Conn, make_user: Callable[..., int], fan_out: Callable[[], int]
) -> dict[str, int]:
    """Four notifications of one reader: read 40 days ago, read 1 day ago, unread and old,
    unread and new. Returns event ids by those names."""
    actor = make_user("alice")
    reader = make_user("bob")
    db.execute(
        "INSERT INTO test_scenarios (name, created_by) SELECT 'S' || g, %s"
        " FROM generate_series(1, 4) g",
        [actor],
    )
    fan_out()
    ids = [r[0] for r in db.execute("SELECT id FROM scenario_events ORDER BY id")]
    names = ["read_old", "read_recent", "unread_old", "unread_new"]
    ages = {"read_old": "40 days", "read_recent": "1 day"}
    for name, event_id in zip(names, ids, strict=True):
        db.execute(
            "UPDATE user_notifications SET created_at = now() - interval '60 days',"
            " read_at = now() - %s::interval WHERE user_id = %s AND event_id = %s",
            [ages.get(name), reader, event_id],
        )
    return dict(zip(names, ids, strict=True))


def remaining(db: Conn) -> set[int]:
    return {r[0] for r in db.execute("SELECT event_id FROM user_notifications")}


def test_purge_removes_only_old_read_notifications(
    db: Conn, aged_notifications: dict[str, int]
) -> None:
    assert db.execute("SELECT purge_read_notifications('30 days')").fetchone() == (1,)
    assert remaining(db) == set(aged_notifications.values()) - {aged_notifications["read_old"]}
    assert db.execute("SELECT purge_read_notifications('30 days')").fetchone() == (0,)
    # Zero means every read notification; unread ones stay whatever their age.
    assert db.execute("SELECT purge_read_notifications('0')").fetchone() == (1,)
    assert remaining(db) == {aged_notifications["unread_old"], aged_notifications["unread_new"]}


@pytest.mark.parametrize(
    ("argument", "error", "message"),
    [
        ("-1 day", errors.InvalidParameterValue, "older_than must not be negative"),
        ("1 month -40 days", errors.InvalidParameterValue, "older_than must not be negative"),
        (None, errors.NullValueNotAllowed, "older_than must not be NULL"),
    ],
)
def test_purge_refuses_negative_and_null(
    db: Conn,
    aged_notifications: dict[str, int],
    argument: str | None,
    error: type[psycopg.Error],
    message: str,
) -> None:
    with pytest.raises(error) as info:
        db.execute("SELECT purge_read_notifications(%s::interval)", [argument])
    assert message in (info.value.diag.message_primary or "")
    assert remaining(db) == set(aged_notifications.values())


def test_purge_cli(database_url: str, db: Conn, aged_notifications: dict[str, int]) -> None:
    result = run_cli("purge", "--older-than", "30d", database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"purged": 1}
    assert aged_notifications["read_old"] not in remaining(db)

    for bad in ("banana", "-5d", "30", "30 parsecs"):
        result = run_cli("purge", f"--older-than={bad}", database_url=database_url)
        assert result.returncode != 0
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert "--older-than" in result.stderr and repr(bad) in result.stderr
    assert len(remaining(db)) == 3


# -- systemd units ---------------------------------------------------------------------------

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd_analyze
def test_systemd_units_verify() -> None:
    result = subprocess.run(
        [str(ROOT / "deploy" / "verify-units.sh")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # The API's READY=1 comes from its uvicorn workers, not from the main process.
    for name, access in (
        ("notifications-listener.service", "main"),
        ("notifications-api.service", "all"),
    ):
        unit = (ROOT / "deploy" / "systemd" / name).read_text()
        assert "Type=notify" in unit and f"NotifyAccess={access}\n" in unit
        assert "EnvironmentFile=/etc/notifications/notifications.env" in unit
    assert "WatchdogSec=" in (ROOT / "deploy/systemd/notifications-listener.service").read_text()


def _unhardened(unit: str) -> str:
    return unit[: unit.index("DynamicUser=yes")] + unit[unit.index("[Install]") :]


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        (
            lambda u: u.replace("Restart=on-failure", "Restart=on-failure\nRestartSecs=2"),
            "Unknown key",
        ),
        (_unhardened, "exposure above"),
        (lambda u: u.replace("/opt/notifications/.venv/bin/", "/usr/bin/"), "ExecStart"),
    ],
)
def test_systemd_verification_catches_mistakes(
    tmp_path: Path, edit: Callable[[str], str], complaint: str
) -> None:
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    unit = tmp_path / "deploy/systemd/notifications-listener.service"
    unit.write_text(edit(unit.read_text()))
    result = subprocess.run(
        [str(tmp_path / "deploy/verify-units.sh")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert complaint in result.stderr
