"""Job callbacks: signed with HMAC-SHA256, delivered from the serve process, retried with backoff.

Deliveries live in the catalog (webhook_deliveries), so a restarted serve delivers what was pending.
Each attempt sends `X-Scriptorium-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>`;
a receiver recomputes it over the raw body and rejects old timestamps (replays).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool

from runner.catalog import models as m
from runner.catalog.db import Catalog
from runner.web.api_config import WebhookPolicy
from runner.web.api_errors import ApiError

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Scriptorium-Signature"
BATCH = 16  # deliveries claimed per look


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: the signature matches the raw body and the timestamp is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, body, timestamp).partition(",v1=")[2]
    fresh = abs((time.time() if now is None else now) - timestamp) <= tolerance
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


def check_callback_url(url: str | None, secret: str | None) -> str | None:
    """An http(s) URL with a host, and a server that can sign; 400 otherwise."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "callback_url must be an http or https URL", param="callback_url")
    if not secret:
        raise ApiError(400, "this server has no webhook secret to sign callbacks with "
                            "(serve --webhook-secret or SCRIPTORIUM_WEBHOOK_SECRET)", param="callback_url")
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed attempt: following it would resend (or drop) a signed body elsewhere."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: dict, timeout: float) -> tuple[int | None, str | None]:
    """(HTTP status, error) of one POST; any 2xx is success (error None)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{type(exc).__name__}: {reason}"


def claim_due(catalog: Catalog, lease: float) -> list[m.WebhookDelivery]:
    """Pending deliveries whose time has come, each leased (its next attempt moved past this one) so
    that another serve on the same catalog does not send it at the same time."""
    now = m.utcnow()
    with catalog.read() as session:
        due = session.scalars(select(m.WebhookDelivery).where(
            m.WebhookDelivery.state == "pending", m.WebhookDelivery.next_attempt_at <= now)
            .order_by(m.WebhookDelivery.next_attempt_at).limit(BATCH)).all()
    claimed = []
    for delivery in due:
        with catalog.write() as session:
            result = session.execute(update(m.WebhookDelivery).where(
                m.WebhookDelivery.id == delivery.id, m.WebhookDelivery.state == "pending",
                m.WebhookDelivery.next_attempt_at <= now)
                .values(next_attempt_at=now + dt.timedelta(seconds=lease)))
        if result.rowcount == 1:
            claimed.append(delivery)
    return claimed


def record_attempt(catalog: Catalog, delivery_id: int, status: int | None, error: str | None,
                   policy: WebhookPolicy) -> str:
    """Log one attempt; the delivery is delivered, failed (out of attempts) or pending again later."""
    now = m.utcnow()
    with catalog.write() as session:
        row = session.get(m.WebhookDelivery, delivery_id, with_for_update=True)
        row.attempts += 1
        row.attempts_log = [*(row.attempts_log or []), {"at": now.isoformat(), "status": status, "error": error}]
        if error is None:
            row.state, row.delivered_at = "delivered", now
        elif row.attempts >= policy.attempts:
            row.state = "failed"
        else:
            row.next_attempt_at = now + dt.timedelta(seconds=policy.delay(row.attempts))
        return row.state


def attempt(catalog: Catalog, delivery: m.WebhookDelivery, secret: str, policy: WebhookPolicy) -> str:
    """Sign and send one delivery now, and record how it went."""
    body = delivery.body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": "scriptorium-webhooks",
               SIGNATURE_HEADER: signature(secret, body, int(time.time())),
               "X-Scriptorium-Event": delivery.event, "X-Scriptorium-Delivery": str(delivery.id)}
    status, error = post(delivery.url, body, headers, policy.timeout)
    state = record_attempt(catalog, delivery.id, status, error, policy)
    if error is not None:
        log.warning("callback %s for %s: attempt failed (%s); %s", delivery.id, delivery.job_id, error, state)
    return state


class Deliverer:
    """Sends due deliveries in the background, each in its own task, so a slow receiver holds up no other."""

    def __init__(self, catalog: Catalog, secret: str | None, policy: WebhookPolicy):
        self.catalog, self.secret, self.policy = catalog, secret, policy
        self.tasks: set[asyncio.Task] = set()

    async def send_due(self) -> None:
        if not self.secret:
            return  # nothing can be signed: deliveries stay pending for a serve that has the secret
        lease = self.policy.timeout + 30
        for delivery in await run_in_threadpool(claim_due, self.catalog, lease):
            task = asyncio.create_task(run_in_threadpool(attempt, self.catalog, delivery, self.secret, self.policy))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
