"""The `notifications` command line: operator mistakes end in one line on stderr."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import psycopg

from notifications import admin, logs
from notifications.config import ConfigError, Settings
from notifications.db import check_url, connect


class CliError(Exception):
    """An operator mistake found by the CLI itself; main() prints it as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse prints its usage before an error; the contract wants one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    if value > 2**63 - 1:
        raise argparse.ArgumentTypeError(f"too large for an id: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2147483647: {text!r}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return value


_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNITS = {
    "s": ("seconds", 1),
    "m": ("minutes", 60),
    "h": ("hours", 3600),
    "d": ("days", 86400),
    "w": ("weeks", 7 * 86400),
}


@dataclass(frozen=True)
class Duration:
    count: int
    unit: str  # a key of _UNITS

    @property
    def interval(self) -> str:
        """'30 days': a PostgreSQL interval keeps calendar days, which DST can lengthen."""
        return f"{self.count} {_UNITS[self.unit][0]}"

    @property
    def seconds(self) -> float:
        return float(self.count * _UNITS[self.unit][1])


def _duration(text: str) -> Duration:
    """'30d', '12h', '15m'."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration like 30d, 12h or 15m: {text!r}")
    return Duration(int(match.group(1)), match.group(2))


def _db(settings: Settings) -> psycopg.Connection[Any]:
    url = settings.require_database_url()
    check_url(url)
    return connect(url, "notifications-cli", autocommit=True)


# -- commands ---------------------------------------------------------------------------------


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    url = settings.require_database_url()
    check_url(url)
    # An unreachable server: a one-line psycopg error here, not a SQLAlchemy traceback later.
    connect(url, "notifications-migrate").close()
    import alembic.util
    import sqlalchemy.exc

    from notifications import migrate

    current = migrate.current_revision(url)
    if current is not None and current not in migrate.known_revisions():
        raise CliError(
            f"the database is at revision {current!r}, unknown to this version of"
            f" notifications (head {migrate.head_revision()!r}): a newer release migrated it;"
            " run that release, or restore a backup"
        )
    try:
        migrate.upgrade(url)
    except sqlalchemy.exc.DBAPIError as exc:
        # SQLAlchemy wraps the driver's error (a role without CREATE, a lock timeout): show
        # the driver's one line, as for every other command.
        if isinstance(exc.orig, psycopg.Error):
            raise exc.orig from None
        raise CliError(str(exc.orig or exc)) from None
    except alembic.util.CommandError as exc:
        raise CliError(f"migration failed: {exc}") from None
    print(f"database at revision {migrate.head_revision()}")
    return 0


def cmd_listen(settings: Settings, args: argparse.Namespace) -> int:
    from notifications.listener.main import run_listener

    return run_listener(settings)


def cmd_deliver(settings: Settings, args: argparse.Namespace) -> int:
    from notifications.delivery.main import run_deliverer

    return run_deliverer(settings)


def _check_can_listen(host: str, port: int) -> None:
    """Bind once and let go: uvicorn would log a bare errno line and exit with status 3,
    with one worker only after the app (and its stream hub) had started."""
    try:
        # The family uvicorn picks: IPv6 only for an IPv6 literal, so "localhost" is IPv4.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        info = socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = info[0]
        with socket.socket(family, kind, proto) as probe:
            # As uvicorn binds: a port whose old connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _with_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line flags win over the environment (API_HOST, API_PORT, ...)."""
    flags = {
        field: getattr(args, flag)
        for flag, field in (
            ("host", "api_host"),
            ("port", "api_port"),
            ("workers", "api_workers"),
            ("threads", "api_threads"),
        )
        if getattr(args, flag, None) is not None
    }
    return settings.model_copy(update=flags)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from notifications.api.server import serve

    settings = _with_flags(settings, args)
    check_url(settings.require_database_url())
    _check_can_listen(settings.api_host, settings.api_port)
    serve(settings)
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from notifications.dev import run_dev

    settings = _with_flags(settings, args)
    # Before the embedded server starts, so that a busy port costs one line and no set-up.
    _check_can_listen(settings.api_host, settings.api_port)
    return run_dev(settings)


def cmd_user_create(settings: Settings, args: argparse.Namespace) -> int:
    with _db(settings) as conn, conn.transaction():
        user_id = admin.create_user(conn, args.name, args.email, args.admin)
        token = admin.issue_token(conn, user_id)
    print(json.dumps({"id": user_id, "name": args.name, "token": token}))
    return 0


def cmd_token_issue(settings: Settings, args: argparse.Namespace) -> int:
    with _db(settings) as conn:
        valid_for = args.valid_for.interval if args.valid_for else None
        print(admin.issue_token(conn, args.user_id, valid_for))
    return 0


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    with _db(settings) as conn:
        print(json.dumps({"revoked": admin.revoke_tokens(conn, args.user_id)}))
    return 0


def cmd_subscription_set(settings: Settings, args: argparse.Namespace) -> int:
    with _db(settings) as conn:
        admin.set_subscription(conn, args.user_id, args.event_type, args.state == "on")
    return 0


def cmd_purge(settings: Settings, args: argparse.Namespace) -> int:
    unread_age = args.unread_older_than.interval if args.unread_older_than else None
    if not (
        args.older_than
        or args.events_older_than
        or args.scenarios_older_than
        or unread_age
        or args.unread_beyond
    ):
        raise CliError(
            "nothing to purge: give --older-than, --events-older-than, --scenarios-older-than,"
            " --unread-older-than or --unread-beyond"
        )
    with _db(settings) as conn:
        # The same key as before for read notifications, so that existing jobs keep parsing.
        result: dict[str, int] = {}
        if args.older_than:
            result["purged"] = admin.purge_read_notifications(conn, args.older_than.interval)
        if unread_age or args.unread_beyond:
            result["unread_purged"] = admin.purge_unread_notifications(
                conn, unread_age, args.unread_beyond
            )
        if args.scenarios_older_than:
            result["scenarios_purged"] = admin.purge_deleted_scenarios(
                conn, args.scenarios_older_than.interval
            )
        if args.events_older_than:
            result["events_purged"] = admin.purge_processed_events(
                conn, args.events_older_than.interval
            )
    print(json.dumps(result))
    return 0


def cmd_backlog(settings: Settings, args: argparse.Namespace) -> int:
    with _db(settings) as conn:
        backlog = admin.backlog(conn)
    print(json.dumps(backlog))
    if args.max_age is not None and backlog["oldest_age_seconds"] > args.max_age.seconds:
        # A monitoring check (cron, Nagios-style) reads the exit status.
        print(
            f"notifications: error: oldest unprocessed event is "
            f"{backlog['oldest_age_seconds']:.0f}s old (limit {args.max_age.seconds:.0f}s)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_listeners(settings: Settings, args: argparse.Namespace) -> int:
    with _db(settings) as conn:
        print(json.dumps(admin.listeners(conn)))
    return 0


def cmd_event_redeliver(settings: Settings, args: argparse.Namespace) -> int:
    with _db(settings) as conn:
        admin.redeliver_event(conn, args.event_id)
    print(json.dumps({"redelivered": args.event_id}))
    return 0


def cmd_delivery_retry(settings: Settings, args: argparse.Namespace) -> int:
    with _db(settings) as conn:
        admin.retry_delivery(conn, args.delivery_id)
    print(json.dumps({"retried": args.delivery_id}))
    return 0


def cmd_delivery_replay(settings: Settings, args: argparse.Namespace) -> int:
    until = args.until or datetime.now(UTC)
    with _db(settings) as conn:
        replayed = admin.replay_endpoint_deliveries(conn, args.endpoint_id, args.since, until)
    print(json.dumps({"endpoint_id": args.endpoint_id, "replayed": replayed}))
    return 0


def _timestamp(text: str) -> datetime:
    """ISO 8601 ('2030-01-31', '2030-01-31T12:00:00+02:00'); without an offset, UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time like 2030-01-31 or 2030-01-31T12:00Z: {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="notifications",
        description="Notification service for test scenarios. Every command reads DATABASE_URL.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[Settings, argparse.Namespace], int], help: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add(
        "dev", cmd_dev, "embedded PostgreSQL (unless DATABASE_URL), listener and API, until Ctrl-C"
    )
    p.add_argument("--host", help="default API_HOST (127.0.0.1)")
    p.add_argument("--port", type=_port, help="default API_PORT (8000)")
    add("migrate", cmd_migrate, "alembic upgrade head on DATABASE_URL")
    add("listen", cmd_listen, "run the listener daemon until SIGTERM/SIGINT")
    add("deliver", cmd_deliver, "run the delivery daemon (e-mail, webhooks) until SIGTERM/SIGINT")
    p = add("serve", cmd_serve, "serve the HTTP API and the stream under uvicorn")
    p.add_argument("--host", help="default API_HOST (127.0.0.1)")
    p.add_argument("--port", type=_port, help="default API_PORT (8000)")
    p.add_argument("--workers", type=_positive_int, help="default API_WORKERS (2)")
    p.add_argument("--threads", type=_positive_int, help="default API_THREADS (8)")

    user = sub.add_parser("user", help="manage users")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    p = add("create", cmd_user_create, "create a user and print its first API token", user_sub)
    p.add_argument("name")
    p.add_argument("--email", metavar="ADDRESS", help="the user's e-mail address")
    p.add_argument(
        "--admin", action="store_true", help="may delete any scenario, not only their own"
    )

    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    p = add("issue", cmd_token_issue, "print a new API token for a user (shown once)", token_sub)
    p.add_argument("user_id", type=_positive_int)
    p.add_argument(
        "--valid-for", type=_duration, help="the token expires after this long (e.g. 90d)"
    )
    p = add("revoke", cmd_token_revoke, "revoke every token of a user", token_sub)
    p.add_argument("user_id", type=_positive_int)

    subs = sub.add_parser("subscription", help="manage a user's subscriptions")
    subs_sub = subs.add_subparsers(dest="subscription_command", required=True, metavar="COMMAND")
    p = add("set", cmd_subscription_set, "enable or disable an event type for a user", subs_sub)
    p.add_argument("user_id", type=_positive_int)
    p.add_argument("event_type")
    p.add_argument("state", choices=["on", "off"])

    p = add("purge", cmd_purge, "delete what retention allows (read notifications, ...)")
    p.add_argument(
        "--older-than", type=_duration, help="read notifications read longer ago (e.g. 30d)"
    )
    p.add_argument(
        "--unread-older-than", type=_duration, help="unread notifications older than (e.g. 180d)"
    )
    p.add_argument(
        "--unread-beyond",
        type=_count,
        metavar="N",
        help="unread notifications beyond each user's newest N",
    )
    p.add_argument(
        "--scenarios-older-than",
        type=_duration,
        help="soft-deleted scenarios deleted longer ago (e.g. 90d)",
    )
    p.add_argument(
        "--events-older-than",
        type=_duration,
        help="processed events older than this that no notification refers to (e.g. 90d)",
    )

    p = add("backlog", cmd_backlog, "print the unprocessed events and the age of the oldest")
    p.add_argument(
        "--max-age",
        type=_duration,
        help="exit with status 1 when the oldest unprocessed event is older (e.g. 5m)",
    )
    add("listeners", cmd_listeners, "print the listener processes connected to the database")

    event = sub.add_parser("event", help="manage scenario events")
    event_sub = event.add_subparsers(dest="event_command", required=True, metavar="COMMAND")
    p = add("redeliver", cmd_event_redeliver, "put an event back in the backlog", event_sub)
    p.add_argument("event_id", type=_positive_int)

    delivery = sub.add_parser("delivery", help="manage e-mail and webhook deliveries")
    delivery_sub = delivery.add_subparsers(
        dest="delivery_command", required=True, metavar="COMMAND"
    )
    p = add(
        "retry", cmd_delivery_retry, "put a dead delivery back in the queue, due now", delivery_sub
    )
    p.add_argument("delivery_id", type=_positive_int, metavar="ID")
    p = add(
        "replay",
        cmd_delivery_replay,
        "put an endpoint's dead deliveries of a time range back in the queue",
        delivery_sub,
    )
    p.add_argument("endpoint_id", type=_positive_int, metavar="ENDPOINT_ID")
    p.add_argument(
        "--since", type=_timestamp, required=True, help="created at or after (ISO 8601; UTC)"
    )
    p.add_argument("--until", type=_timestamp, help="created before (ISO 8601; default now)")
    return parser


def _not_utf8(argv: Sequence[str]) -> str | None:
    """The first argument that is not UTF-8 (Python keeps its bytes as lone surrogates)."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return repr(os.fsencode(arg))[1:]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    bad = _not_utf8(argv)
    if bad is not None:
        # Names and event types are stored as UTF-8 text: refuse before psycopg fails to
        # encode them with a traceback.
        print(f"notifications: error: argument is not valid UTF-8: {bad}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_format, settings.log_level)
        return int(args.func(settings, args))
    except (ConfigError, CliError) as exc:
        print(f"notifications: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        message = exc.diag.message_primary if exc.diag and exc.diag.message_primary else str(exc)
        message = " ".join(message.split()) or type(exc).__name__
        if isinstance(exc, psycopg.errors.UndefinedFunction | psycopg.errors.UndefinedTable):
            message += " (is the database migrated? run: notifications migrate)"
        print(f"notifications: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
