"""The adaptive policy's risk score, signal by signal, as a table."""

from __future__ import annotations

import math

import pytest

from oidc_provider.authn.policy import LoginContext, PreviousLogin
from oidc_provider.authn.risk import great_circle_km, risk_score, travel
from oidc_provider.settings.policy import RiskWeights

LONDON = (51.5074, -0.1278)
PARIS = (48.8566, 2.3522)
LYON = (45.7640, 4.8357)
VERSAILLES = (48.8049, 2.1204)
NEW_YORK = (40.7128, -74.0060)
SYDNEY = (-33.8688, 151.2093)
NOW = 1_715_000_000.0
HOUR = 3600.0


def previous(ago=HOUR, ip="81.2.69.142", country="GB", where=LONDON) -> PreviousLogin:
    lat, lon = where if where else (None, None)
    return PreviousLogin(at=NOW - ago, ip=ip, country=country, latitude=lat, longitude=lon)


def ctx(where=LONDON, **changes) -> LoginContext:
    lat, lon = where if where else (None, None)
    base = dict(user_id="u", username="alice", groups=(), attributes={}, user_policy=None, client_id="web",
                client_policy=None, ip="81.2.69.142", country="GB", latitude=lat, longitude=lon, now=NOW,
                device_known=True, recent_failures=0, previous=previous())
    base.update(changes)
    return LoginContext(**base)


CASES = [
    # (context, score, signals)
    (ctx(), 0.0, []),
    (ctx(previous=None), 0.0, []),  # a first login from a known device (a device seen before the history)
    (ctx(device_known=False), 0.4, [("new_device", 0.4)]),
    (ctx(device_known=False, previous=None), 0.4, [("new_device", 0.4)]),  # a first login is judged on the device
    # country: compared with the previous login, both must be known
    (ctx(country="FR"), 0.3, [("new_country", 0.3)]),
    (ctx(country="gb"), 0.0, []),
    (ctx(country=None), 0.0, []),
    (ctx(previous=previous(country=None), country="FR"), 0.0, []),
    (ctx(country="FR", previous=None), 0.0, []),
    # ip
    (ctx(ip="81.2.69.1"), 0.1, [("new_ip", 0.1)]),
    (ctx(ip=None), 0.0, []),
    (ctx(previous=previous(ip=None)), 0.0, []),
    # impossible travel: faster than 1000 km/h over at least 100 km
    (ctx(where=NEW_YORK, previous=previous(ago=HOUR)), 0.6, [("impossible_travel", 0.6)]),         # 5570 km/h
    (ctx(where=NEW_YORK, previous=previous(ago=5 * HOUR)), 0.6, [("impossible_travel", 0.6)]),     # 1114 km/h
    (ctx(where=NEW_YORK, previous=previous(ago=6 * HOUR)), 0.0, []),                               # 928 km/h
    (ctx(where=LYON, previous=previous(ago=HOUR / 3, where=PARIS)), 0.6, [("impossible_travel", 0.6)]),  # 1176
    (ctx(where=LYON, previous=previous(ago=HOUR / 2, where=PARIS)), 0.0, []),                      # 784 km/h
    (ctx(where=VERSAILLES, previous=previous(ago=60, where=PARIS)), 0.0, []),   # 17 km: GeoIP noise, not travel
    (ctx(where=NEW_YORK, previous=previous(ago=0)), 0.6, [("impossible_travel", 0.6)]),            # at once
    (ctx(where=NEW_YORK, previous=previous(ago=-10 * HOUR)), 0.6, [("impossible_travel", 0.6)]),   # clock skew
    (ctx(where=LONDON, previous=previous(ago=0)), 0.0, []),                                        # no move
    (ctx(where=None, previous=previous(ago=1)), 0.0, []),                                          # no position
    (ctx(where=NEW_YORK, previous=previous(ago=1, where=None)), 0.0, []),
    (ctx(where=(200.0, 0.0), previous=previous(ago=1)), 0.0, []),                                  # not on Earth
    (ctx(where=(math.nan, 0.0), previous=previous(ago=1)), 0.0, []),
    (ctx(where=NEW_YORK, now=math.nan), 0.0, []),
    # recent failures: 0.1 each, at most 0.3
    (ctx(recent_failures=1), 0.1, [("recent_failures", 0.1)]),
    (ctx(recent_failures=3), 0.3, [("recent_failures", 0.3)]),
    (ctx(recent_failures=50), 0.3, [("recent_failures", 0.3)]),
    (ctx(recent_failures=-2), 0.0, []),
    # together: summed in a fixed order, capped at 1
    (ctx(device_known=False, country="FR", ip="1.1.1.1"), 0.8,
     [("new_device", 0.4), ("new_country", 0.3), ("new_ip", 0.1)]),
    (ctx(device_known=False, country="US", ip="1.1.1.1", where=NEW_YORK, recent_failures=9), 1.0,
     [("new_device", 0.4), ("new_country", 0.3), ("new_ip", 0.1), ("impossible_travel", 0.6),
      ("recent_failures", 0.3)]),
    (ctx(ip="1.1.1.1", recent_failures=2), 0.3, [("new_ip", 0.1), ("recent_failures", 0.2)]),
]


@pytest.mark.parametrize("context, score, signals", CASES)
def test_risk_score(context, score, signals):
    got_score, got_signals = risk_score(context, RiskWeights())
    assert got_score == pytest.approx(score)
    assert [name for name, _ in got_signals] == [name for name, _ in signals]
    assert [part for _, part in got_signals] == pytest.approx([part for _, part in signals])


def test_the_score_is_exact_at_the_threshold():
    # 0.4 + 0.1 must compare >= 0.5, and 0.1 * 3 must equal 0.3, as written in the file
    assert risk_score(ctx(device_known=False, ip="1.1.1.1"), RiskWeights())[0] == 0.5
    assert risk_score(ctx(recent_failures=3), RiskWeights(recent_failures_cap=1))[0] == 0.3


WEIGHT_CASES = [
    ({"new_device": 0.9}, ctx(device_known=False), 0.9, ["new_device"]),
    ({"new_device": 0}, ctx(device_known=False), 0.0, []),  # a zero weight is no signal
    ({"recent_failure": 0.25, "recent_failures_cap": 1}, ctx(recent_failures=3), 0.75, ["recent_failures"]),
    ({"impossible_travel": 1}, ctx(where=SYDNEY, previous=previous(ago=HOUR)), 1.0, ["impossible_travel"]),
]


@pytest.mark.parametrize("weights, context, score, names", WEIGHT_CASES)
def test_weights(weights, context, score, names):
    got_score, got_signals = risk_score(context, RiskWeights(**weights))
    assert got_score == pytest.approx(score) and [name for name, _ in got_signals] == names


@pytest.mark.parametrize("speed, distance, fires", [
    (1000, 100, True),   # London -> New York in 5 h: 1114 km/h
    (1200, 100, False),
    (1000, 6000, False),  # the jump is shorter than the minimum distance
])
def test_travel_limits(speed, distance, fires):
    context = ctx(where=NEW_YORK, previous=previous(ago=5 * HOUR))
    _, signals = risk_score(context, RiskWeights(), max_speed_kmh=speed, min_distance_km=distance)
    assert ("impossible_travel" in dict(signals)) is fires


@pytest.mark.parametrize("a, b, km", [
    (LONDON, PARIS, 343.6),
    (LONDON, NEW_YORK, 5570.2),
    (PARIS, LYON, 391.5),
    (LONDON, LONDON, 0.0),
    ((0.0, 0.0), (0.0, 180.0), 20015.1),  # half the equator
    ((90.0, 0.0), (-90.0, 0.0), 20015.1),  # pole to pole
    ((0.0, 179.5), (0.0, -179.5), 111.2),  # across the antimeridian
])
def test_great_circle_km(a, b, km):
    assert great_circle_km(*a, *b) == pytest.approx(km, rel=0.002, abs=0.1)


def test_travel_reports_distance_and_speed():
    km, speed = travel(ctx(where=NEW_YORK, previous=previous(ago=2 * HOUR)))
    assert km == pytest.approx(5570, rel=0.002) and speed == pytest.approx(2785, rel=0.002)
    assert travel(ctx(where=NEW_YORK, previous=previous(ago=0)))[1] == math.inf
    assert travel(ctx(previous=None)) is None
