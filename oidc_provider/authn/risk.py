"""The adaptive policy's risk score: pure arithmetic over a LoginContext, no I/O.

Each signal that fires adds its weight; the score is capped at 1. Signals that compare
with the previous login need that login and the same piece of data on both sides: a
first login, or a login without GeoIP data, is judged on the device and failures only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..settings.policy import RiskWeights

if TYPE_CHECKING:
    from .policy import LoginContext

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)
SIGNALS = ("new_device", "new_country", "new_ip", "impossible_travel", "recent_failures")


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in km between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _coordinates(lat, lon) -> tuple[float, float] | None:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lat, lon)):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return float(lat), float(lon)


def travel(context: LoginContext) -> tuple[float, float] | None:
    """(km, km/h) from the previous login to this one; None without both positions and times.

    Logins at the same instant (or a previous login "after" this one, a clock skew) are
    an infinite speed for any distance.
    """
    previous = context.previous
    if previous is None:
        return None
    here = _coordinates(context.latitude, context.longitude)
    there = _coordinates(previous.latitude, previous.longitude)
    if here is None or there is None:
        return None
    try:
        elapsed = float(context.now) - float(previous.at)
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(elapsed):
        return None
    km = great_circle_km(*there, *here)
    hours = max(elapsed, 0.0) / 3600
    speed = km / hours if hours > 0 else (math.inf if km > 0 else 0.0)
    return km, speed


def risk_score(context: LoginContext, weights: RiskWeights | None = None, *, max_speed_kmh: float = 1000,
               min_distance_km: float = 100) -> tuple[float, list[tuple[str, float]]]:
    """(score in 0..1, [(signal, contribution), ...]) for the signals that fired, in SIGNALS order."""
    weights = weights or RiskWeights()
    fired: list[tuple[str, float]] = []
    previous = context.previous

    if not context.device_known:
        fired.append(("new_device", weights.new_device))
    if previous is not None:
        if _known(previous.country) and _known(context.country) \
                and previous.country.upper() != context.country.upper():
            fired.append(("new_country", weights.new_country))
        if _known(previous.ip) and _known(context.ip) and previous.ip != context.ip:
            fired.append(("new_ip", weights.new_ip))
    moved = travel(context)
    if moved is not None and moved[0] >= min_distance_km and moved[1] > max_speed_kmh:
        fired.append(("impossible_travel", weights.impossible_travel))
    failures = context.recent_failures
    failures = failures if isinstance(failures, int) and not isinstance(failures, bool) else 0
    if failures > 0:
        fired.append(("recent_failures", min(failures * weights.recent_failure, weights.recent_failures_cap)))

    fired = [(signal, contribution) for signal, contribution in fired if contribution > 0]
    # rounded so that 0.4 + 0.1 + ... compares with the threshold as written in the file
    score = round(min(1.0, sum(contribution for _, contribution in fired)), 6)
    return score, fired


def _known(value) -> bool:
    return isinstance(value, str) and value != ""
