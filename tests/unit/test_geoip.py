"""GeoIP over a real, tiny MaxMind database written by mmdb-writer."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from oidc_provider.authn.geoip import GeoIP
from oidc_provider.settings import ConfigError

# Records shaped like GeoIP2/GeoLite2 City (MaxMind's own test networks).
RECORDS = {
    "81.2.69.0/24": {"country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
                     "location": {"latitude": 51.5142, "longitude": -0.0931, "accuracy_radius": 10}},
    "175.16.199.0/24": {"country": {"iso_code": "CN", "names": {"en": "China"}}},  # Country-level only
    "89.160.20.0/24": {"registered_country": {"iso_code": "SE"}},  # no "country": the registered one
    "2001:480::/32": {"country": {"iso_code": "US"},
                      "location": {"latitude": 37.751, "longitude": -97.822}},
    "192.0.2.0/24": {"location": {"latitude": 10.0, "longitude": 10.0}},  # coordinates, no country
    "198.51.100.0/24": {"country": {"iso_code": "FR"}, "location": {"latitude": 95.0, "longitude": 2.0}},
}


def write_mmdb(path: Path, records: dict | None = None, ip_version: int = 6) -> Path:
    """A GeoIP2-City-shaped database; IPv6 with the IPv4 space mapped, as MaxMind ships them."""
    writer = MMDBWriter(ip_version=ip_version, ipv4_compatible=ip_version == 6, database_type="GeoIP2-City",
                        languages=["en"], description="test database")
    for network, record in (records or RECORDS).items():
        if ip_version == 4 and ":" in network:
            continue
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture(scope="module")
def geoip(tmp_path_factory):
    reader = GeoIP(write_mmdb(tmp_path_factory.mktemp("geo") / "city.mmdb"))
    yield reader
    reader.close()


LOOKUPS = [
    ("81.2.69.142", ("GB", 51.5142, -0.0931)),
    ("81.2.69.0", ("GB", 51.5142, -0.0931)),
    (" 81.2.69.255 ", ("GB", 51.5142, -0.0931)),
    ("81.2.70.1", (None, None, None)),
    ("175.16.199.1", ("CN", None, None)),
    ("89.160.20.112", ("SE", None, None)),
    ("2001:480::1", ("US", 37.751, -97.822)),
    ("2001:480:ffff::1", ("US", 37.751, -97.822)),
    ("2001:481::1", (None, None, None)),
    ("192.0.2.1", (None, 10.0, 10.0)),
    ("198.51.100.1", ("FR", None, None)),  # a latitude off the Earth is dropped
    ("8.8.8.8", (None, None, None)),
    ("::1", (None, None, None)),
    ("not an ip", (None, None, None)),
    ("999.1.1.1", (None, None, None)),
    ("81.2.69.142/24", (None, None, None)),
    ("", (None, None, None)),
    (None, (None, None, None)),
    (42, (None, None, None)),
]


@pytest.mark.parametrize("ip, expected", LOOKUPS)
def test_lookup(geoip, ip, expected):
    assert geoip.lookup(ip) == expected


def test_the_database_is_reported(geoip):
    assert geoip.enabled and geoip.database_type == "GeoIP2-City"


def test_an_ipv4_database_answers_nothing_for_ipv6(tmp_path):
    reader = GeoIP(write_mmdb(tmp_path / "v4.mmdb", ip_version=4))
    assert reader.lookup("81.2.69.142") == ("GB", 51.5142, -0.0931)
    assert reader.lookup("2001:480::1") == (None, None, None)  # the reader raises; lookup does not


def test_without_a_database_nothing_is_looked_up():
    for path in (None, ""):
        reader = GeoIP(path)
        assert not reader.enabled and reader.database_type is None
        assert reader.lookup("81.2.69.142") == (None, None, None)


def test_a_closed_reader_answers_nothing(tmp_path):
    reader = GeoIP(write_mmdb(tmp_path / "city.mmdb"))
    reader.close()
    assert reader.lookup("81.2.69.142") == (None, None, None)


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "GeoIP database not found"),
    (lambda p: (p.write_bytes(b"not a database" * 10), p)[1], "not a MaxMind database"),
    (lambda p: (p.write_bytes(b""), p)[1], "not a MaxMind database"),
    (lambda p: (p.mkdir(), p)[1], "not a MaxMind database"),
])
def test_a_configured_database_that_cannot_be_opened_is_a_config_error(tmp_path, make, message):
    path = make(tmp_path / "broken.mmdb")
    with pytest.raises(ConfigError) as caught:
        GeoIP(path)
    assert str(path) in str(caught.value) and message in str(caught.value)
