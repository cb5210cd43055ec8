"""Email: Jinja templates rendered to a text + HTML message, sent over SMTP with smtplib.

Templates translate with `_()` and `{% trans %}` in the language being spoken (i18n.py): the
page's that caused the message, or a `speaking(...)` block's. Text bodies are not trimmed,
so each translation keeps its own line breaks."""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path

from flask_babel import get_translations
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ..i18n import current as current_locale
from ..settings import ConfigError
from . import DeliveryError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "email"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class EmailTemplates:
    """templates/email/<name>/{subject.txt, body.txt, body.html}; only .html is autoescaped."""

    def __init__(self, folder: Path = TEMPLATES):
        # StrictUndefined: a caller that forgets a context key fails loudly, not with a blank code.
        self.env = Environment(loader=FileSystemLoader(folder), undefined=StrictUndefined,
                               autoescape=select_autoescape(["html"]), extensions=["jinja2.ext.i18n"])
        self.env.install_gettext_callables(
            gettext=lambda text: get_translations().ugettext(text),
            ngettext=lambda singular, plural, n: get_translations().ungettext(singular, plural, n),
            newstyle=True)
        self.env.globals["current_locale"] = current_locale

    def render(self, name: str, context: dict) -> RenderedEmail:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"bad email template name {name!r}")
        subject = " ".join(self.env.get_template(f"{name}/subject.txt").render(context).split())
        context = {**context, "subject": subject}
        text = self.env.get_template(f"{name}/body.txt").render(context).strip() + "\n"
        html = self.env.get_template(f"{name}/body.html").render(context)
        return RenderedEmail(subject, text, html)


class SmtpMailer:
    """One SMTP connection per message: mail is rare here, and nothing goes stale."""

    name = "smtp"

    def __init__(self, settings, base_dir: Path | None = None):
        self.settings = settings
        self.sender = parseaddr(settings.from_address)[1] or settings.from_address
        self.tls = None
        if settings.security != "none":
            ca_file = Path(base_dir or ".", settings.ca_file) if settings.ca_file else None
            if ca_file and not ca_file.is_file():
                raise ConfigError(f"email.ca_file: {ca_file} is not a file")
            # Always verified: the default context checks the chain and the host name.
            self.tls = ssl.create_default_context(cafile=ca_file)

    def message(self, to: str, email: RenderedEmail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.from_address
        message["To"] = to
        message["Subject"] = email.subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "localhost")
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies
        message.set_content(email.text)
        message.add_alternative(email.html, subtype="html")  # -> multipart/alternative
        return message

    def send(self, to: str, email: RenderedEmail) -> None:
        settings = self.settings
        host, port, timeout, tls = settings.host, settings.effective_port, settings.timeout, self.tls
        try:
            if settings.security == "tls":
                smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=tls)
            else:
                smtp = smtplib.SMTP(host, port, timeout=timeout)
            with smtp:
                if settings.security == "starttls":
                    smtp.starttls(context=tls)  # refused by the server: an error, never plain text
                if settings.username:
                    smtp.login(settings.username, settings.password or "")
                smtp.send_message(self.message(to, email), from_addr=self.sender, to_addrs=[to])
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code} {_reply(exc.smtp_error)}",
                                permanent=exc.smtp_code >= 500) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = ", ".join(f"{code} {_reply(reply)}" for code, reply in exc.recipients.values())
            raise DeliveryError(f"recipient refused: {codes}",
                                permanent=all(code >= 500 for code, _ in exc.recipients.values())) from None
        except (smtplib.SMTPException, OSError) as exc:  # OSError: refused, timeout, ssl.SSLError
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None


def _reply(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())[:200]
