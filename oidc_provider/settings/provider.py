"""The provider's settings: every key, its default and why, in one place.

`config/provider.yaml` overrides these defaults; the environment variables ISSUER,
DATABASE_URL, REDIS_URL and SECRET_KEY override the file. Loading validates the
whole file and names the file and key of the first problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator


class ConfigError(Exception):
    """A configuration file is invalid; the message names the file and the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lifetimes(Strict):
    """Lifetimes in seconds."""

    authorization_code: int = Field(60, gt=0, le=600)  # RFC 6749 4.1.2: short, 10 min at most
    access_token: int = Field(600, gt=0)  # used when neither resource nor client sets one
    id_token: int = Field(3600, gt=0)
    refresh_token: int = Field(30 * 24 * 3600, gt=0)  # absolute lifetime of a family
    session: int = Field(8 * 3600, gt=0)  # IdP session: how long a login is reused
    interaction: int = Field(15 * 60, gt=0)  # a login page left open expires
    consent: int = Field(365 * 24 * 3600, gt=0)  # remembered consent


class Resource(Strict):
    """A protected resource (RFC 8707 `resource`): the access token's audience and lifetime."""

    access_token_lifetime: int | None = Field(None, gt=0)
    scopes: list[str] | None = None  # scopes this resource accepts; None: any


class Store(Strict):
    """Ephemeral state (IdP sessions, codes, consent, rate limits)."""

    backend: Literal["sql", "redis"] = "sql"  # sql: the embedded default, same database
    redis_url: str | None = None  # required when backend is redis
    prefix: str = "op:"  # key prefix, so several deployments can share one Redis


class Settings(Strict):
    issuer: HttpUrl = "http://127.0.0.1:5000"  # type: ignore[assignment]
    database_url: str = "sqlite:///instance/oidc.db"  # relative paths are from the base dir
    keys_dir: str = "keys"
    clients_file: str = "config/clients.yaml"
    dev_mode: bool = True  # development conveniences (dev outbox, demo data); off in production
    lifetimes: Lifetimes = Lifetimes()
    resources: dict[str, Resource] = {}
    store: Store = Store()
    id_token_signing_alg: Literal["RS256", "ES256"] = "RS256"  # default; clients may override
    # acr claimed for a single-factor login; None omits acr, as the Transmit guide does
    single_factor_acr: str | None = None
    scopes_supported: list[str] = ["openid", "profile", "email", "phone", "offline_access"]
    max_request_bytes: int = Field(64 * 1024, gt=1024)  # larger bodies get invalid_request
    max_parameter_length: int = Field(4096, gt=64)  # longer parameters get invalid_request
    password_failures_before_throttle: int = Field(10, gt=0)  # per account, per 15 minutes

    @field_validator("resources")
    @classmethod
    def _resources_are_absolute_uris(cls, value: dict[str, Resource]) -> dict[str, Resource]:
        for uri in value:
            if "://" not in uri or "#" in uri:  # RFC 8707 2: absolute URI, no fragment
                raise ValueError(f"resource {uri!r} must be an absolute URI without a fragment")
        return value

    @property
    def issuer_url(self) -> str:
        return str(self.issuer).rstrip("/")

    def max_token_lifetime(self, client_lifetimes: list[int]) -> int:
        """The longest a signed token can live; retired keys stay published that long."""
        resource = [r.access_token_lifetime for r in self.resources.values() if r.access_token_lifetime]
        return max([self.lifetimes.id_token, self.lifetimes.access_token, *resource, *client_lifetimes])


def format_validation_error(path: str, error: ValidationError, prefix: str = "") -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return f"{path}: {prefix}field '{field}': {first['msg']}"


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_settings(path: str | Path | None = None, overrides: dict | None = None) -> Settings:
    """Defaults, then the YAML file, then the environment, then explicit overrides (tests)."""
    data: dict = {}
    if path is not None:
        data = read_yaml(Path(path))
    env = os.environ
    if env.get("ISSUER"):
        data["issuer"] = env["ISSUER"]
    if env.get("DATABASE_URL"):
        data["database_url"] = env["DATABASE_URL"]
    if env.get("REDIS_URL"):
        data["store"] = {**data.get("store", {}), "backend": "redis", "redis_url": env["REDIS_URL"]}
    data.update(overrides or {})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path or "settings"), exc)) from None
    if settings.store.backend == "redis" and not settings.store.redis_url:
        raise ConfigError(f"{path}: field 'store.redis_url': required when store.backend is redis")
    return settings
