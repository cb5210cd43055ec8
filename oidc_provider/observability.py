"""Observability (SPEC section 6): Prometheus metrics, JSON log lines carrying the request
id, and readiness.

Metrics are module-level, as Prometheus clients expect: every app in a process shares
them. Under several workers `oidc-provider serve` gives PROMETHEUS_MULTIPROC_DIR a fresh
folder before any worker starts; each worker writes its counters there and `/metrics`
adds them up. Authentication metrics are counted in a few central places: the factor
registry (challenges), `verify_counted` (answers), the audit log (policy decisions,
lockouts, federation) and the interaction (step-up).
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import re
import secrets
import sys
import time
from datetime import datetime, timezone

from flask import Response, current_app, g, has_request_context, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

log = logging.getLogger(__name__)

REQUEST_LATENCY = Histogram(
    "oidc_http_request_duration_seconds", "Time to answer a request, by Flask endpoint (never the raw path)",
    ["endpoint"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REQUESTS = Counter("oidc_http_requests", "Answered requests, by Flask endpoint and status", ["endpoint", "status"])
TOKENS_ISSUED = Counter("oidc_tokens_issued", "Successful token responses, by grant type", ["grant_type"])
FACTOR_CHALLENGES = Counter(
    "oidc_factor_challenges", "Challenges started: a code or link sent, WebAuthn options, a push", ["factor"])
FACTOR_RESULTS = Counter(
    "oidc_factor_results", "success and failure: answers checked; abandoned: a challenge left unanswered "
    "(another factor chosen, or the login expired)", ["factor", "result"])
STEP_UP = Counter(
    "oidc_step_up", "asked: a signed-in user needs more factors for the level; met: the code was issued "
    "after them; unmet: answered unmet_authentication_requirements", ["outcome"])
POLICY_DECISIONS = Counter(
    "oidc_policy_decisions", "Policy decisions, by action and what decided (a rule, or the policy)",
    ["action", "reason"])
DELIVERIES = Counter(
    "oidc_deliveries", "Tries to send an email, text message or call, by channel and outcome: sent; retry (this "
    "try failed, another follows after a backoff); failed (the last try failed: the message is lost)",
    ["channel", "outcome"])
LOCKOUTS = Counter("oidc_lockouts", "Accounts locked after too many failures, by the last factor", ["factor"])

# An incoming X-Request-ID is kept when it looks like an id (a proxy's or the client's), else replaced.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")


# -- the app: request id, latency, tokens, /metrics -----------------------------------------

def init_app(app, op) -> None:
    """Per-request hooks, and /metrics when a token is configured (routes exist only when enabled)."""
    # first of all before_request functions (CSRF's included), so every log line has the id
    app.before_request_funcs.setdefault(None, []).insert(0, _begin_request)
    app.after_request(_finish_request)
    if op.settings.metrics.token:
        app.add_url_rule("/metrics", "metrics", metrics_view)


def request_id() -> str | None:
    return g.get("request_id") if has_request_context() else None


def request_id_for(incoming: str | None) -> str:
    return incoming if incoming and REQUEST_ID.fullmatch(incoming) else secrets.token_hex(16)


def _begin_request():
    g.request_id = request_id_for(request.headers.get("X-Request-ID"))
    g.request_started = time.perf_counter()


def _finish_request(response):
    endpoint = request.endpoint or "unmatched"  # a 404's path is not a label: it is unbounded
    elapsed = time.perf_counter() - g.get("request_started", time.perf_counter())
    grant_type = request.form.get("grant_type", "") if endpoint == "oidc.token" else None
    if "request_id" not in g:
        g.request_id = secrets.token_hex(16)
    response.headers["X-Request-ID"] = g.request_id
    answered(current_app.config["OP_SETTINGS"], request.method, request.path, endpoint, response.status_code,
             elapsed, request.remote_addr, g.request_id, grant_type)
    return response


def answered(settings, method: str, path: str, endpoint: str, status: int, elapsed: float, ip: str | None,
             request_id: str, grant_type: str | None = None) -> None:
    """Count (and log, with logging.requests) one answered request; Flask's and the fast path's."""
    REQUEST_LATENCY.labels(endpoint).observe(elapsed)
    REQUESTS.labels(endpoint, str(status)).inc()
    if grant_type is not None and status == 200:
        TOKENS_ISSUED.labels(grant_type).inc()
    if settings.logging.requests:
        log.info("%s %s %s", method, path, status, extra={
            "request_id": request_id, "http": {"method": method, "endpoint": endpoint, "status": status,
                                               "duration_ms": round(elapsed * 1000, 3), "ip": ip}})


def metrics_view():
    """Prometheus text format, for a scraper that sends the configured bearer token (RFC 6750)."""
    op = current_app.extensions["op"]
    expected = f"Bearer {op.settings.metrics.token}".encode()
    if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
        return Response(json.dumps({"error": "invalid_token", "error_description": "A valid bearer token is required."}),
                        status=401, mimetype="application/json",
                        headers={"WWW-Authenticate": 'Bearer realm="metrics", error="invalid_token"'})
    op.challenges.sweep()
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    text = generate_latest(registry) + generate_latest(_background_jobs(current_app._get_current_object()))
    return Response(text, mimetype=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def _background_jobs(app) -> CollectorRegistry:
    """oidc_background_jobs{queue}: read from the store at each scrape, so it counts every
    process's jobs once (a backlog of messages or logout tokens shows here); left out when the
    store does not answer."""
    from prometheus_client.core import GaugeMetricFamily

    from .background import jobs_in_store

    class BackgroundJobs:
        def collect(self):
            try:
                counts = jobs_in_store(app)
            except Exception:  # noqa: BLE001 - /readyz tells that the store is down; the other metrics still count
                return
            family = GaugeMetricFamily("oidc_background_jobs", "Jobs in the background queues (messages, logout "
                                       "tokens), waiting or being run, by queue", labels=["queue"])
            for queue, count in counts.items():
                family.add_metric([queue], count)
            yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(BackgroundJobs())
    return registry


def readiness(op):
    """/readyz: 200 when the database and the ephemeral store answer, else 503 naming which not."""
    from sqlalchemy import text

    from .extensions import db

    checks = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the detail goes to the log
        db.session.rollback()
        log.warning("readiness: database unreachable: %s", exc.__class__.__name__)
        checks["database"] = "unreachable"
    try:
        checks["store"] = "ok" if op.store.ping() else "unreachable"
    except Exception as exc:  # noqa: BLE001
        log.warning("readiness: store (%s) unreachable: %s", op.settings.store.backend, exc.__class__.__name__)
        checks["store"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    response = jsonify(status="ready" if ready else "unavailable", checks=checks)
    response.status_code = 200 if ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response


# -- authentication metrics ------------------------------------------------------------------

class ChallengeTracker:
    """Per factor: challenges, answers, and challenges left unanswered (abandons).

    A challenge is remembered per login (its binding) in the store. It is abandoned when
    the login starts another factor's challenge, or when the login's lifetime passes
    without a successful answer: per minute of issue the store counts challenges opened
    and closed, and once that minute's challenges have all expired one instance (claimed
    with `add`) counts the difference. So abandons appear a login lifetime after the fact,
    counted once across workers and instances.
    """

    LOOKBACK = 60  # at most this many buckets are swept at once (after a long quiet spell)

    def __init__(self, store, lifetime: int, factor_ids):
        self.store = store
        self.lifetime = lifetime
        self.bucket = min(60, max(1, lifetime // 10))  # seconds per counting bucket: a minute by default
        self.factor_ids = list(factor_ids)
        self._swept_until = None  # last bucket this process has looked at

    def _keep(self) -> int:
        return self.lifetime + (self.LOOKBACK + 2) * self.bucket

    def opened(self, factor_id: str, binding: str | None) -> None:
        FACTOR_CHALLENGES.labels(factor_id).inc()
        if binding:
            bucket = int(time.time() // self.bucket)
            previous = self.store.get(f"challenge:{binding}")
            self.store.set(f"challenge:{binding}", {"factor": factor_id, "bucket": bucket}, self.lifetime)
            self.store.incr(f"challenges-opened:{factor_id}:{bucket}", self._keep())
            self.store.incr(f"challenges-opened:{bucket}", self._keep())  # any factor: lets the sweep skip
            if previous:  # a resend replaces its own challenge; another factor's is abandoned
                self._close(previous, abandoned=previous["factor"] != factor_id)
        self.sweep()

    def answered(self, factor, binding: str | None, ok: bool) -> None:
        FACTOR_RESULTS.labels(factor.id, "success" if ok else "failure").inc()
        if ok and binding and factor.kind != "password":  # a password has no challenge to close
            marker = self.store.take(f"challenge:{binding}")
            if marker:
                self._close(marker, abandoned=False)

    def _close(self, marker: dict, abandoned: bool) -> None:
        self.store.incr(f"challenges-closed:{marker['factor']}:{marker['bucket']}", self._keep())
        if abandoned:
            FACTOR_RESULTS.labels(marker["factor"], "abandoned").inc()

    def sweep(self) -> None:
        """Count the expired challenges of every bucket whose challenges have all expired."""
        # a bucket is due when its last challenge's lifetime is over, plus a bucket for clock skew
        due = int((time.time() - self.lifetime) // self.bucket) - 2
        if self._swept_until is not None and due <= self._swept_until:
            return  # the common case: nothing new, no store round trip
        last = self.store.get("challenges-swept-until")  # shared by workers and instances
        start = max(due - self.LOOKBACK, (last + 1) if last is not None else due)
        for bucket in range(start, due + 1):
            if not self.store.add(f"challenges-swept:{bucket}", 1, self._keep()):
                continue  # another worker or instance counts it
            if not self.store.take(f"challenges-opened:{bucket}"):
                continue
            for factor_id in self.factor_ids:
                opened = int(self.store.take(f"challenges-opened:{factor_id}:{bucket}") or 0)
                closed = int(self.store.take(f"challenges-closed:{factor_id}:{bucket}") or 0)
                if opened > closed:
                    FACTOR_RESULTS.labels(factor_id, "abandoned").inc(opened - closed)
        self.store.set("challenges-swept-until", due, self._keep())
        self._swept_until = due


def instrument_factors(factors, op) -> list:
    """Count every factor's challenges where they start: its `begin`."""
    for factor in factors:
        def begin(user, context, _begin=factor.begin, _id=factor.id):
            result = _begin(user, context)
            op.challenges.opened(_id, (context or {}).get("binding"))
            return result

        factor.begin = begin
    return factors


def counts_answers(verify_counted):
    """Decorates `verify_counted`, the one place answers are checked: success or failure per factor."""

    @functools.wraps(verify_counted)
    def wrapper(op, factor, user, response: dict, context: dict, *args, **kwargs):
        result = verify_counted(op, factor, user, response, context, *args, **kwargs)
        op.challenges.answered(factor, (context or {}).get("binding"), result.ok)
        return result

    return wrapper


def note_step_up(record: dict, need: str) -> None:
    """An interaction turns into a step-up: the user is known but the level needs more factors."""
    if need == "login:mfa" and record.get("reason") != need:
        STEP_UP.labels("asked").inc()
        record["step_up"] = True


def step_up_met(interaction: dict | None) -> None:
    if interaction and interaction.get("step_up"):
        STEP_UP.labels("met").inc()


def authorization_error(error: str | None) -> None:
    if error == "unmet_authentication_requirements":
        STEP_UP.labels("unmet").inc()


def _decided_by(decision: dict) -> str:
    """A bounded label for a policy decision: the rule's name, or which policy decided."""
    if decision.get("rule"):
        return f"rule:{decision['rule']}"[:80]
    reason = str(decision.get("reason", ""))
    if reason.startswith("trusted device"):
        return "trusted_device"
    first = reason.split(" ", 1)[0]
    return f"policy:{first}" if first in ("never", "always", "adaptive") else "policy"


def observe_audit(event: str, detail: dict) -> None:
    """Metrics that follow audit events, so both always tell the same story."""
    if event == "policy.decision":
        decision = detail.get("decision") or {}
        POLICY_DECISIONS.labels(decision.get("action", "unknown"), _decided_by(decision)).inc()
    elif event == "account.locked":
        LOCKOUTS.labels(detail.get("factor") or "unknown").inc()
    elif event == "federation.started":  # an upstream sign-in completes at its callback, not in verify
        FACTOR_CHALLENGES.labels("fed").inc()
    elif event == "federation.signed_in":
        FACTOR_RESULTS.labels("fed", "success").inc()
    elif event == "factor.failed" and detail.get("factor") == "fed":
        FACTOR_RESULTS.labels("fed", "failure").inc()


# -- logging -------------------------------------------------------------------------------

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Adds the current request's id to every record (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and any `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def log_handler(log_format: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    handler._oidc_provider = True  # ours: replaced, never duplicated, when another app is built
    return handler


def configure_logging(settings) -> None:
    """The root logger writes to standard error in the configured format (other handlers stay)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_oidc_provider", False)]:
        root.removeHandler(handler)
    root.addHandler(log_handler(settings.format))
    root.setLevel(settings.level)


def granian_log_config(log_format: str) -> dict:
    """Granian's own loggers in the same format and stream as the app's."""
    formatter = ({"()": f"{__name__}.JsonFormatter"} if log_format == "json"
                 else {"()": "logging.Formatter", "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s"})
    return {
        "formatters": {"generic": formatter, "access": formatter},
        "handlers": {
            "console": {"formatter": "generic", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
            "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        },
    }


__all__ = ["ChallengeTracker", "configure_logging", "counts_answers", "init_app", "instrument_factors",
           "readiness", "request_id"]
