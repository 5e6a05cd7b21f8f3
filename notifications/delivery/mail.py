"""E-mail over SMTP: smtplib in a small thread pool, connections kept open and reused."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import threading
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formataddr
from urllib.parse import unquote, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined

from notifications.config import ConfigError
from notifications.delivery.job import Job, Outcome, Result
from notifications.unsubscribe import make_token

_POLICY = policy.SMTP.clone(max_line_length=998)

SMTP_TIMEOUT = 30.0

_templates = Environment(
    loader=PackageLoader("notifications.delivery", "templates"),
    # Scenario and user names are anyone's text: escaped in HTML, always.
    autoescape=lambda name: name is not None and name.endswith(".html.j2"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    tls: bool  # smtps://: TLS from the first byte; smtp://: STARTTLS when offered
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(
            f"SMTP_URL must be smtp://[user:password@]host:port or smtps://...: {url!r}"
        )
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 25)
    except ValueError:
        raise ConfigError(f"SMTP_URL has an invalid port: {url!r}") from None
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Mailer:
    def __init__(self, smtp_url: str, mail_from: str, public_url: str, secret: str) -> None:
        self.target = parse_smtp_url(smtp_url)
        self.mail_from = mail_from
        self.public_url = public_url.rstrip("/")
        self.secret = secret
        self.domain = mail_from.rpartition("@")[2].strip("> ") or "localhost"
        self._idle: list[smtplib.SMTP] = []
        self._lock = threading.Lock()

    # -- the message -----------------------------------------------------------------------

    def compose(self, job: Job) -> EmailMessage:
        note = job.notification()
        token = make_token(self.secret, job.user_id, job.event_type, "email")
        unsubscribe_url = f"{self.public_url}/unsubscribe/{token}"
        values = {
            "event_type": job.event_type,
            "scenario_name": note["scenario"]["name"],
            "scenario_id": note["scenario"]["id"],
            "message": note["message"],
            "created_at": note["created_at"],
            "inbox_url": self.public_url + "/",
            "unsubscribe_url": unsubscribe_url,
        }
        subject = _one_line(_templates.get_template("subject.txt.j2").render(values))
        # SMTP line endings, and no folding below RFC 5322's 998: the default policy folds at
        # 78, and a long unsubscribe URL (one token, no spaces) then comes out RFC 2047
        # encoded, which mail clients do not read as a link.
        msg = EmailMessage(policy=_POLICY)
        msg["Subject"] = subject
        msg["From"] = self.mail_from
        msg["To"] = formataddr(("", str(job.row["email"])))
        # Stable across retries: a receiving system that saw this id already drops a resend.
        msg["Message-ID"] = f"<delivery-{job.id}@{self.domain}>"
        msg["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(_templates.get_template("email.txt.j2").render(values))
        msg.add_alternative(
            _templates.get_template("email.html.j2").render(subject=subject, **values),
            subtype="html",
        )
        return msg

    # -- connections -----------------------------------------------------------------------

    def _open(self) -> smtplib.SMTP:
        t = self.target
        smtp: smtplib.SMTP
        if t.tls:
            smtp = smtplib.SMTP_SSL(
                t.host, t.port, timeout=SMTP_TIMEOUT, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(t.host, t.port, timeout=SMTP_TIMEOUT)
        try:
            smtp.ehlo()
            if not t.tls and smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if t.username is not None:
                smtp.login(t.username, t.password or "")
        except BaseException:
            with contextlib.suppress(Exception):
                smtp.close()
            raise
        return smtp

    def _take(self) -> tuple[smtplib.SMTP, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._open(), False

    def _give_back(self, smtp: smtplib.SMTP) -> None:
        with self._lock:
            self._idle.append(smtp)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for smtp in idle:
            with contextlib.suppress(Exception):
                smtp.quit()

    # -- sending (in a worker thread) ------------------------------------------------------

    def send(self, job: Job) -> Result:
        if not job.row["email"]:
            return Result("dead", error="the user has no e-mail address")
        msg = self.compose(job)
        for _ in range(2):
            try:
                smtp, reused = self._take()
            except smtplib.SMTPResponseException as exc:
                return _refusal(exc)
            except (OSError, smtplib.SMTPException) as exc:
                return Result(
                    "retry", error=f"SMTP server unreachable: {_one_line(str(exc))}"[:500]
                )
            try:
                smtp.send_message(msg)
            except smtplib.SMTPServerDisconnected as exc:
                with contextlib.suppress(Exception):
                    smtp.close()
                if reused:
                    continue  # the server closed an idle connection: once more on a new one
                return Result("retry", error=f"SMTP connection lost: {_one_line(str(exc))}")
            except smtplib.SMTPRecipientsRefused as exc:
                self._give_back_after_reset(smtp)
                code, text = next(iter(exc.recipients.values()))
                return _reply(code, text)
            except smtplib.SMTPResponseException as exc:
                self._give_back_after_reset(smtp)
                return _refusal(exc)
            except (OSError, smtplib.SMTPException) as exc:
                with contextlib.suppress(Exception):
                    smtp.close()
                return Result("retry", error=f"SMTP error: {_one_line(str(exc))}"[:500])
            self._give_back(smtp)
            return Result("delivered", smtp_reply="250")
        return Result("retry", error="SMTP connection lost twice")

    def _give_back_after_reset(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.rset()
        except Exception:
            with contextlib.suppress(Exception):
                smtp.close()
            return
        self._give_back(smtp)


def _reply(code: int, text: bytes | str) -> Result:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    reply = f"{code} {_one_line(message)}"[:500]
    # 5xx: the server will never take it (no such mailbox, refused): dead at once.
    outcome: Outcome = "dead" if 500 <= code < 600 else "retry"
    return Result(outcome, smtp_reply=reply, error=f"SMTP {reply}")


def _refusal(exc: smtplib.SMTPResponseException) -> Result:
    return _reply(exc.smtp_code, exc.smtp_error)
