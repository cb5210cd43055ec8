"""A real SMTP server on loopback (aiosmtpd) from which the benchmark reads email codes."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import defaultdict
from email import message_from_bytes

from aiosmtpd.controller import Controller


class Mailbox:
    """Messages by recipient; `code_after` waits for the next message and returns its code."""

    def __init__(self):
        self.messages: dict[str, list[str]] = defaultdict(list)
        self.arrived = threading.Condition()
        self.port = 0

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content)
        parts = [message] if not message.is_multipart() else [p for p in message.walk() if p.get_content_type() == "text/plain"]
        text = "\n".join(p.get_payload(decode=True).decode() for p in parts)
        with self.arrived:
            for address in envelope.rcpt_tos:
                self.messages[address.lower()].append(text)
            self.arrived.notify_all()
        return "250 OK"

    def count(self, address: str) -> int:
        with self.arrived:
            return len(self.messages[address.lower()])

    def code_after(self, address: str, seen: int, timeout: float = 15) -> str:
        deadline = time.time() + timeout
        with self.arrived:
            while len(self.messages[address.lower()]) <= seen:
                if not self.arrived.wait(max(0.0, deadline - time.time())):
                    raise TimeoutError(f"no email to {address}")
            return re.search(r"\b(\d{6,8})\b", self.messages[address.lower()][-1]).group(1)


def start_mailbox():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    mailbox.port = port
    return mailbox, controller.stop
