"""A reference push device: `oidc-provider device enroll|pending|approve|deny`.

It speaks the device protocol of views/push.py over HTTP, like a phone app would, so push
approval can be used and tested without a phone. Its state file holds the device's
private key (an EC P-256 JWK), its id and the provider's URL; it is written with mode
0600 and never overwritten by an enrollment.

    oidc-provider device enroll 'https://id.example.com/push/devices?token=...' --name laptop --state dev.json
    oidc-provider device pending --state dev.json
    oidc-provider device approve CHALLENGE_ID --state dev.json
    oidc-provider device deny CHALLENGE_ID --state dev.json
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import click
import requests
from joserfc import jws
from joserfc.jwk import ECKey

ENROLL_PATH = "/push/devices"
TIMEOUT = 15


class DeviceError(Exception):
    """The provider refused, or could not be reached; str() says why."""


def request_proof(key: ECKey, device_id: str, method: str, url: str) -> str:
    """The JWT that authenticates one request of the device (a fresh jti each time)."""
    claims = {"htm": method, "htu": url, "iat": int(time.time()), "jti": secrets.token_urlsafe(24)}
    header = {"alg": "ES256", "typ": "push-request+jwt", "kid": device_id}
    return jws.serialize_compact(header, json.dumps(claims, separators=(",", ":")), key)


def sign_answer(key: ECKey, device_id: str, challenge_id: str, nonce: str, decision: str) -> str:
    """The JWS that answers a challenge: over its id, its nonce and the decision."""
    payload = {"challenge": challenge_id, "nonce": nonce, "decision": decision}
    header = {"alg": "ES256", "typ": "push-answer+jws", "kid": device_id}
    return jws.serialize_compact(header, json.dumps(payload, separators=(",", ":")), key)


def parse_enrollment(url_or_token: str, provider: str | None = None) -> tuple[str, str]:
    """(provider base URL, token) from the QR code's URL, or from a bare token and --provider."""
    value = url_or_token.strip()
    if value.startswith(("https://", "http://")):
        parts = urlsplit(value)
        token = (parse_qs(parts.query).get("token") or [""])[0]
        if not parts.path.endswith(ENROLL_PATH) or not token:
            raise DeviceError(f"not an enrollment URL (expected .../push/devices?token=...): {value}")
        return f"{parts.scheme}://{parts.netloc}{parts.path[:-len(ENROLL_PATH)]}", token
    if not provider:
        raise DeviceError("a bare enrollment token needs --provider URL")
    return provider.rstrip("/"), value


def _call(method: str, url: str, **kwargs) -> dict:
    try:
        answer = requests.request(method, url, timeout=TIMEOUT, allow_redirects=False, **kwargs)
    except requests.RequestException as exc:
        raise DeviceError(f"could not reach the provider ({type(exc).__name__})") from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if not 200 <= answer.status_code < 300:
        raise DeviceError(f"HTTP {answer.status_code} {body.get('error', '')}: "
                          f"{body.get('error_description', 'unexpected answer')}".strip())
    return body


@dataclass
class Device:
    provider: str  # the provider's base URL (its issuer)
    device_id: str
    name: str
    key: ECKey

    @classmethod
    def enroll(cls, url_or_token: str, name: str, provider: str | None = None,
               push_token: str | None = None) -> Device:
        """Make a key pair and register its public half with the enrollment token."""
        base, token = parse_enrollment(url_or_token, provider)
        key = ECKey.generate_key("P-256")
        body = {"token": token, "name": name, "public_key": key.as_dict(private=False)}
        if push_token:
            body["push_token"] = push_token
        answer = _call("POST", f"{base}{ENROLL_PATH}", json=body)
        return cls(base, answer["device_id"], answer.get("name", name), key)

    # -- the state file ---------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Device:
        try:
            state = json.loads(Path(path).read_text())
            return cls(state["provider"], state["device_id"], state["name"], ECKey.import_key(state["key"]))
        except FileNotFoundError:
            raise DeviceError(f"{path}: no such state file; enroll first") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise DeviceError(f"{path}: not a device state file ({exc})") from None

    def save(self, path: Path) -> None:
        """Write the state, private key included, readable by its owner only (0600)."""
        path = Path(path)
        state = {"provider": self.provider, "device_id": self.device_id, "name": self.name,
                 "key": self.key.as_dict(private=True)}
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(state, file)
        os.replace(partial, path)

    # -- talking to the provider -----------------------------------------------------------------

    def pending(self) -> list[dict]:
        url = f"{self.provider}/push/devices/{self.device_id}/challenges"
        proof = request_proof(self.key, self.device_id, "GET", url)
        return _call("GET", url, headers={"Authorization": f"Device {proof}"})["challenges"]

    def answer(self, challenge_id: str, decision: str, nonce: str | None = None) -> dict:
        """Approve or deny; the nonce comes from the pending list unless given."""
        if nonce is None:
            found = [c for c in self.pending() if c["id"] == challenge_id]
            if not found:
                raise DeviceError(f"no pending sign-in request {challenge_id}")
            nonce = found[0]["nonce"]
        signature = sign_answer(self.key, self.device_id, challenge_id, nonce, decision)
        return _call("POST", f"{self.provider}/push/challenges/{challenge_id}",
                     json={"decision": decision, "signature": signature})


# -- the commands ---------------------------------------------------------------------------------

STATE = click.option("--state", "state", required=True, type=click.Path(path_type=Path), metavar="FILE",
                     help="the device's state file (private key, id, provider URL)")


def _load(path: Path) -> Device:
    try:
        return Device.load(path)
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def device():
    """A reference push device: enroll, list pending sign-ins, approve or deny."""


@device.command("enroll")
@click.argument("url_or_token")
@click.option("--name", required=True, help="the device's name, shown on the account page")
@STATE
@click.option("--provider", metavar="URL", help="the provider's URL, when URL_OR_TOKEN is a bare token")
@click.option("--push-token", metavar="TOKEN", help="passed to the push gateway in notifications")
def device_enroll(url_or_token, name, state, provider, push_token):
    """Enroll with the URL of the account page's QR code (or its token and --provider)."""
    if state.exists():
        raise click.ClickException(f"{state} exists; it may hold an enrolled key. Use another --state file.")
    try:
        enrolled = Device.enroll(url_or_token, name, provider, push_token)
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from None
    enrolled.save(state)
    click.echo(f"enrolled {enrolled.name!r} as device {enrolled.device_id} with {enrolled.provider}")


@device.command("pending")
@STATE
@click.option("--json", "as_json", is_flag=True, help="print the challenges as JSON")
def device_pending(state, as_json):
    """List the sign-ins waiting for this device's answer."""
    try:
        challenges = _load(state).pending()
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(challenges, indent=2))
        return
    if not challenges:
        click.echo("no sign-in is waiting")
    for challenge in challenges:
        left = max(0, int(challenge["expires_at"] - time.time()))
        click.echo(f"{challenge['id']}  {challenge['client']}  from {challenge['ip'] or 'unknown IP'}"
                   f"  {challenge['place'] or 'unknown place'}  expires in {left}s")


def _answer(state: Path, challenge_id: str, decision: str) -> None:
    try:
        _load(state).answer(challenge_id, decision)
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'approved' if decision == 'approve' else 'denied'} {challenge_id}")


@device.command("approve")
@click.argument("challenge_id")
@STATE
def device_approve(challenge_id, state):
    """Approve a pending sign-in."""
    _answer(state, challenge_id, "approve")


@device.command("deny")
@click.argument("challenge_id")
@STATE
def device_deny(challenge_id, state):
    """Deny a pending sign-in: it never completes."""
    _answer(state, challenge_id, "deny")
