"""Real servers on 127.0.0.1 for the tests: an SMTP server (aiosmtpd) that keeps what
arrives, an HTTP server standing in for the SMS/voice gateways, and `serving` /
`serving_app` to run any HTTP server or WSGI app on a thread for a test.

A provider sends messages from background threads after it has answered, so what the
servers received is read only once the providers of this process have sent what they
queued (`delivered`); one in another process (`serve`) is waited for by count (`at_least`)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import LoginPassword
from werkzeug.serving import make_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- waiting for what was sent -----------------------------------------------------------

def delivered(timeout: float = 30) -> None:
    """Wait until the providers running in this process have sent every message they queued
    (or given up on it after their retries)."""
    from oidc_provider.background import drain_all

    assert drain_all(timeout, "delivery"), f"messages still queued after {timeout}s"


def arrived(found, at_least: int, what: str, timeout: float = 15) -> list:
    """`found()` once every queued message is sent and it lists at least `at_least` items."""
    delivered()
    deadline = time.monotonic() + timeout
    while len(items := found()) < at_least:
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.05)
    return items


# -- a real SMTP server -----------------------------------------------------------------

@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: object  # email.message.EmailMessage
    tls: bool
    login: LoginPassword | None


class Mailbox:
    """aiosmtpd handler that keeps what arrives; refuses recipients at refused.example."""

    def __init__(self):
        self._messages: list[Received] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content, policy=policy.default)
        tls = server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or implicit
        self._messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, tls,
                                       session.auth_data))
        return "250 OK"

    def all(self) -> list[Received]:  # a method: aiosmtpd reads every attribute of its handler
        return arrived(lambda: list(self._messages), 0, "email")

    def to(self, address: str, at_least: int = 0) -> list[Received]:
        return arrived(lambda: [got for got in self._messages if address in got.rcpt_tos], at_least,
                       f"email to {address}")


@dataclass
class SmtpServer:
    mailbox: Mailbox
    port: int


def start_smtp() -> tuple[SmtpServer, Controller]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, server_hostname="mx.test")
    controller.start()
    return SmtpServer(mailbox, port), controller


# -- a real HTTP server for the gateways ------------------------------------------------

@dataclass
class HttpRequest:
    path: str
    headers: object  # email.message.Message: case-insensitive .get()
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def form(self) -> dict:
        return {key: values[0] for key, values in parse_qs(self.body.decode()).items()}


class GatewayHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server._received.append(HttpRequest(self.path, self.headers, body))
        if self.server.failures:  # a gateway having a bad moment: the next `failures` requests fail
            self.server.failures -= 1
            status = 503
        else:
            status = self.server.status
        time.sleep(self.server.delay)
        answer = json.dumps({"sid": "SM0001"} if status < 300 else
                            {"code": 21211, "message": "The 'To' number is not a valid phone number."}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


class Gateway(ThreadingHTTPServer):
    """Stands in for a webhook receiver and for Twilio: records requests, answers `status`
    (503 to the next `failures` requests) after `delay` seconds."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), GatewayHandler)
        self._received: list[HttpRequest] = []
        self.status, self.delay, self.failures = 200, 0.0, 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def received(self) -> list[HttpRequest]:
        return arrived(lambda: list(self._received), 0, "request")

    def texts(self, number: str, at_least: int = 0) -> list[str]:
        """The text messages (not calls) that reached a number."""
        return arrived(lambda: [r.json()["text"] for r in self._received
                                if r.path.endswith("/sms") and r.json().get("to") == number],
                       at_least, f"text to {number}")

    def reset(self) -> None:
        delivered()  # nothing of an earlier test arrives later
        self._received.clear()
        self.status, self.delay, self.failures = 200, 0.0, 0


@contextmanager
def serving(server):
    """Run an HTTP server (http.server's, Werkzeug's) on a thread for the block; closed after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def serving_app(app):
    """A WSGI app on a free loopback port for the block; yields its base URL."""
    with serving(make_server("127.0.0.1", 0, app, threaded=True)) as server:
        yield f"http://127.0.0.1:{server.server_port}"


def text_of(message) -> str:
    """The plain-text part of a received email."""
    part = message.get_body(preferencelist=("plain",))
    return part.get_content()


def code_in(text: str) -> str:
    return re.search(r"\b(\d{6,10})\b", text).group(1)


def email_code(smtp: SmtpServer, address: str, index: int = -1, after: int = 0) -> str:
    """The code in the latest (or index-th) email to an address, once more than `after` came."""
    return code_in(text_of(smtp.mailbox.to(address, at_least=after + 1)[index].message))


def sms_code(gateway: Gateway, number: str, after: int = 0) -> str:
    """The code in the latest text message to a number, once more than `after` came."""
    return code_in(gateway.texts(number, at_least=after + 1)[-1])
