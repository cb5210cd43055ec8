"""Country and coordinates of an IP address from a MaxMind database (GeoLite2/GeoIP2 .mmdb).

The one place that knows `maxminddb`. A Country database gives the country only, a
City database the coordinates too. Without a configured database there are no lookups
and the policy sees an unknown country: country rules then fail closed (see
settings/policy.py). A configured database that cannot be opened is a configuration
error at start-up, not a silent downgrade; a lookup itself never raises.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import maxminddb

from ..settings import ConfigError

log = logging.getLogger(__name__)

Location = tuple[str | None, float | None, float | None]
UNKNOWN: Location = (None, None, None)


class GeoIP:
    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._reader = None
        if self.path is None:
            return
        try:
            self._reader = maxminddb.open_database(str(self.path))
        except FileNotFoundError:
            raise ConfigError(f"{self.path}: GeoIP database not found") from None
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(f"{self.path}: not a MaxMind database ({exc})") from None

    @property
    def enabled(self) -> bool:
        return self._reader is not None

    @property
    def database_type(self) -> str | None:
        return self._reader.metadata().database_type if self._reader else None

    def lookup(self, ip: str | None) -> Location:
        """(ISO country code, latitude, longitude); Nones for what is unknown. Never raises."""
        if self._reader is None or not isinstance(ip, str) or not ip:
            return UNKNOWN
        try:
            record = self._reader.get(ip.strip())
        except Exception:  # noqa: BLE001 - bad address, IPv6 in an IPv4 database, closed reader
            return UNKNOWN
        if not isinstance(record, dict):
            return UNKNOWN
        return _country(record), *_coordinates(record)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _country(record: dict) -> str | None:
    # "country" is where the address is used; "registered_country" (where the network is
    # registered) is all some records have, e.g. anycast and satellite networks.
    for key in ("country", "registered_country"):
        block = record.get(key)
        code = block.get("iso_code") if isinstance(block, dict) else None
        if isinstance(code, str) and len(code) == 2:
            return code.upper()
    return None


def _coordinates(record: dict) -> tuple[float | None, float | None]:
    location = record.get("location")
    if not isinstance(location, dict):
        return None, None
    lat, lon = location.get("latitude"), location.get("longitude")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lat, lon))
    if not numbers or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None, None
    return float(lat), float(lon)
