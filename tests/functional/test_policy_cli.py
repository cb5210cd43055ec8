"""`oidc-provider policy check | explain | simulate`: the real console script in a subprocess.

One base directory for the module: keys, public clients with and without an MFA policy,
users in the database, a small real GeoIP database and a policy file with rules.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from oidc_provider import create_app
from tests.conftest import run_cli as cli
from oidc_provider.authn.policy import LoginContext, PreviousLogin, evaluate
from oidc_provider.extensions import db
from oidc_provider.models import User, record_audit
from oidc_provider.settings.policy import load_policy
from tests.unit.test_geoip import write_mmdb

COMMITTED = Path(__file__).resolve().parents[2] / "config" / "policy.yaml"
PASSWORD = "a password 12345"

RULES = """\
policy: adaptive
geoip_database: data/geo.mmdb      # relative: from the base directory
rules:
  - name: office-network
    if: {ip_ranges: ["10.0.0.0/8", "2001:db8::/32"]}
    then: allow
  - name: blocked
    if: {countries: [CN]}
    then: deny
  - name: admins-always
    if: {groups: [admins]}
    then: require_mfa
  - name: night
    if: {time: {timezone: Europe/Paris, from: "22:00", to: "06:00", days: [sat, sun]}}
    then: {require_acr: phr}
  - name: payroll-new-device
    if: {clients: [payroll], new_device: true}
    then: require_mfa
"""


def app_for(home: Path):
    return create_app(home / "config" / "provider.yaml", base_dir=home)


def update_user(home: Path, username: str, **fields) -> None:
    with app_for(home).app_context():
        user = db.session.execute(db.select(User).filter_by(username=username)).scalar_one()
        for name, value in fields.items():
            setattr(user, name, value)
        db.session.commit()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    base = tmp_path_factory.mktemp("policy-cli") / "base"
    (base / "config").mkdir(parents=True)
    (base / "data").mkdir()
    (base / "config" / "provider.yaml").write_text(
        "issuer: http://127.0.0.1:5999\n"
        f"database_url: sqlite:///{base / 'data' / 'oidc.db'}\n"
        "keys_dir: keys\n"
        "clients_file: config/clients.yaml\n"
        "dev_mode: true\n"
    )
    clients = [
        {"client_id": "web", "token_endpoint_auth_method": "none", "redirect_uris": ["https://web.example/cb"]},
        {"client_id": "payroll", "token_endpoint_auth_method": "none", "redirect_uris": ["https://pay.example/cb"],
         "mfa_policy": "always"},
        {"client_id": "intranet", "token_endpoint_auth_method": "none", "redirect_uris": ["https://in.example/cb"],
         "mfa_policy": "never"},
    ]
    (base / "config" / "clients.yaml").write_text(json.dumps({"clients": clients}))
    (base / "config" / "policy.yaml").write_text(RULES)
    write_mmdb(base / "data" / "geo.mmdb")
    cli(base, "keys", "generate")
    cli(base, "db", "upgrade")
    for username in ("alice", "bob", "carol", "dave"):
        cli(base, "users", "add", username, "--password-stdin", input=PASSWORD + "\n")
    update_user(base, "alice", groups=["admins", "staff"])
    update_user(base, "carol", mfa_policy="never", attributes={"department": "hr"})
    update_user(base, "dave", last_login={"at": datetime.fromisoformat("2024-05-06T09:00:00+00:00").timestamp(),
                                          "ip": "81.2.69.142", "country": "GB",
                                          "latitude": 51.5142, "longitude": -0.0931})
    return base


def field(output: str, name: str) -> str:
    match = re.search(rf"^{name}:\s+(.*)$", output, re.M)
    assert match, f"no {name!r} line in:\n{output}"
    return match.group(1)


# -- check ------------------------------------------------------------------------------

def test_check_the_default_file(home):
    out = cli(home, "policy", "check").stdout
    assert f"{home / 'config' / 'policy.yaml'}: policy adaptive, 5 rules, GeoIP GeoIP2-City, all valid" in out


def test_check_the_committed_file(home):
    out = cli(home, "policy", "check", str(COMMITTED)).stdout
    assert f"{COMMITTED}: policy never, 0 rules, no GeoIP, all valid" in out


@pytest.mark.parametrize("text, rule, name", [
    (RULES.replace('"10.0.0.0/8"', '"10.0.0.1/8"'), "office-network", "if.ip_ranges"),
    (RULES.replace("then: deny", "then: block"), "blocked", "then"),
    (RULES.replace("from: \"22:00\"", "from: \"10pm\""), "night", "if.time.from"),
    (RULES.replace("  - name: payroll-new-device\n", "  - nom: payroll-new-device\n"), "#5", "nom"),
    (RULES.replace("policy: adaptive", "policy: sometimes"), None, "policy"),
])
def test_check_names_file_rule_and_field(home, tmp_path, text, rule, name):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    err = cli(home, "policy", "check", str(path), ok=False).stderr
    assert str(path) in err and f"field '{name}'" in err, err
    assert rule is None or f"rule '{rule}'" in err, err


def test_check_a_geoip_database_that_cannot_be_opened(home, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(RULES.replace("data/geo.mmdb", "data/missing.mmdb"))
    err = cli(home, "policy", "check", str(path), ok=False).stderr
    assert str(path) in err and "field 'geoip_database'" in err and "missing.mmdb" in err, err


def test_check_warns_about_countries_without_geoip(home, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(RULES.replace("geoip_database: data/geo.mmdb", "geoip_database: null"))
    result = cli(home, "policy", "check", str(path))
    assert "rule 'blocked' looks at countries but geoip_database is not set" in result.stderr
    assert "5 rules, no GeoIP, all valid" in result.stdout


def test_check_without_a_file(tmp_path):
    base = tmp_path / "empty"
    base.mkdir()
    err = cli(base, "policy", "check", ok=False).stderr
    assert f"{base / 'config' / 'policy.yaml'}: file not found" in err


# -- explain ----------------------------------------------------------------------------

EXPLAIN_CASES = [
    # (arguments, decision, reason)
    (["--user", "bob", "--client", "web", "--ip", "10.1.2.3"], "allow",
     "rule 'office-network': ip 10.1.2.3 in 10.0.0.0/8"),
    (["--user", "alice", "--client", "payroll", "--ip", "2001:db8::42"], "allow",
     "rule 'office-network': ip 2001:db8::42 in 2001:db8::/32"),
    (["--user", "bob", "--client", "web", "--ip", "175.16.199.20"], "deny", "rule 'blocked': country CN in CN"),
    (["--user", "alice", "--client", "web", "--ip", "81.2.69.142"], "require_mfa",
     "rule 'admins-always': group admins"),
    (["--user", "bob", "--client", "web", "--ip", "81.2.69.142", "--at", "2024-01-13T23:30:00+01:00"],
     "require_acr phr", "rule 'night': local time Sat 23:30 Europe/Paris in 22:00-06:00 (sat, sun)"),
    (["--user", "bob", "--client", "web", "--ip", "81.2.69.142", "--at", "2024-01-14T04:30:00"],  # UTC: 05:30 Paris
     "require_acr phr", "rule 'night': local time Sun 05:30 Europe/Paris"),
    (["--user", "bob", "--client", "payroll", "--ip", "81.2.69.142"], "require_mfa",
     "rule 'payroll-new-device': new device, client payroll"),
    (["--user", "bob", "--client", "payroll", "--ip", "81.2.69.142", "--known-device"], "require_mfa",
     "always policy (client 'payroll'): MFA required"),
    (["--user", "bob", "--client", "intranet", "--ip", "81.2.69.142"], "allow",
     "never policy (client 'intranet'): MFA not required"),
    (["--user", "carol", "--client", "payroll", "--ip", "81.2.69.142", "--known-device"], "allow",
     "never policy (user): MFA not required"),
    (["--user", "bob", "--client", "web", "--ip", "81.2.69.142", "--known-device"], "allow",
     "adaptive policy (global): risk 0 < 0.5 (no risk signals): MFA not required"),
    (["--user", "bob", "--client", "web", "--ip", "81.2.69.142"], "allow",
     "adaptive policy (global): risk 0.4 < 0.5 (new device +0.4): MFA not required"),
    (["--user", "bob", "--client", "web", "--ip", "81.2.69.142", "--failures", "1"], "require_mfa",
     "adaptive policy (global): risk 0.5 >= 0.5 (new device +0.4, 1 recent failure +0.1): low confidence, "
     "MFA required"),
    (["--user", "bob", "--client", "web", "--ip", "81.2.69.142", "--known-device", "--failures", "7"], "allow",
     "risk 0.3 < 0.5 (7 recent failures +0.3)"),
    # dave's last login was from London at 09:00 UTC; an hour later from the US
    (["--user", "dave", "--client", "web", "--ip", "2001:480::1", "--known-device", "--at", "2024-05-06T10:00:00Z"],
     "require_mfa", "risk 1 >= 0.5 (new country US (last GB) +0.3, new ip 2001:480::1 (last 81.2.69.142) +0.1, "
                    "impossible travel 7295 km at 7295 km/h +0.6)"),
    (["--user", "dave", "--client", "web", "--ip", "81.2.69.142", "--known-device", "--at", "2024-05-06T10:00:00Z"],
     "allow", "risk 0 < 0.5"),
    (["--user", "nobody", "--client", "web", "--ip", "81.2.69.142", "--known-device"], "allow",
     "adaptive policy (global): risk 0"),
]


# A case that names no time is explained at a weekday noon: at the weekend's night the rule
# 'night' would decide instead (22:00-06:00 Europe/Paris, Saturday and Sunday)
WEEKDAY_NOON = "2024-05-08T12:00:00Z"


@pytest.mark.parametrize("args, decision, reason", EXPLAIN_CASES)
def test_explain(home, args, decision, reason):
    if "--at" not in args:
        args = [*args, "--at", WEEKDAY_NOON]
    out = cli(home, "policy", "explain", *args).stdout
    assert field(out, "decision") == decision, out
    assert reason in field(out, "reason"), out


def test_explain_shows_what_it_looked_at(home):
    out = cli(home, "policy", "explain", "--user", "alice", "--client", "payroll", "--ip", "81.2.69.142",
              "--at", "2024-05-06T10:00:00Z", "--known-device", "--failures", "2").stdout
    assert re.search(r"^user:\s+alice \(sub [0-9a-f-]{36}\), groups: admins, staff, policy: -$", out, re.M), out
    assert field(out, "client") == "payroll, policy: always"
    assert field(out, "ip") == "81.2.69.142, GB (51.51, -0.09)"
    assert field(out, "at") == "2024-05-06 10:00:00 UTC"
    assert field(out, "device") == "known, recent failures: 2"
    assert "no such user" in field(cli(home, "policy", "explain", "--user", "nobody", "--client", "web",
                                       "--ip", "10.0.0.1").stdout, "user")
    out = cli(home, "policy", "explain", "--user", "dave", "--client", "web", "--ip", "8.8.8.8").stdout
    assert field(out, "previous") == "2024-05-06 09:00:00 UTC from 81.2.69.142, GB"
    assert field(out, "ip") == "8.8.8.8, unknown country"


def test_explain_with_other_rules(home, tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text("policy: always\n")
    out = cli(home, "policy", "explain", "--user", "bob", "--client", "web", "--ip", "10.1.2.3",
              "--rules", str(path)).stdout
    assert field(out, "decision") == "require_mfa"
    assert field(out, "reason") == "always policy (global): MFA required"
    assert field(out, "ip") == "10.1.2.3, unknown country, no GeoIP database"


@pytest.mark.parametrize("args, message", [
    (["--user", "bob", "--client", "nope", "--ip", "10.1.2.3"], "no client 'nope'"),
    (["--user", "bob", "--client", "web", "--ip", "10.1.2"], "is not an IP address"),
    (["--user", "bob", "--client", "web", "--ip", "10.1.2.3", "--at", "yesterday"], "ISO 8601"),
    (["--user", "bob", "--client", "web", "--ip", "10.1.2.3", "--failures", "-1"], "--failures"),
    (["--user", "bob", "--client", "web", "--ip", "10.1.2.3", "--rules", "/nonexistent.yaml"],
     "/nonexistent.yaml: file not found"),
])
def test_explain_refuses_bad_input(home, args, message):
    assert message in cli(home, "policy", "explain", *args, ok=False).stderr


# -- simulate ---------------------------------------------------------------------------

def login(username, client_id, ip, country, when, *, groups=(), client_policy=None, device_known=True):
    return LoginContext(user_id=f"id-{username}", username=username, groups=groups, attributes={}, user_policy=None,
                        client_id=client_id, client_policy=client_policy, ip=ip, country=country, latitude=None,
                        longitude=None, now=datetime.fromisoformat(when).timestamp(), device_known=device_known,
                        recent_failures=0, previous=PreviousLogin(at=0, ip=ip, country=country))


RECORDED = [  # decided with the committed, permissive policy
    login("bob", "web", "10.1.2.3", None, "2024-05-06T08:00:00+00:00"),
    login("bob", "web", "175.16.199.20", "CN", "2024-05-06T08:05:00+00:00"),
    login("alice", "web", "81.2.69.142", "GB", "2024-05-06T08:10:00+00:00", groups=("admins",)),
    login("bob", "payroll", "81.2.69.142", "GB", "2024-05-06T08:15:00+00:00", client_policy="always"),
    login("bob", "web", "81.2.69.142", "GB", "2024-01-13T22:30:00+00:00"),  # Saturday 23:30 in Paris
]


def test_simulate(home, tmp_path):
    new_rules = home / "config" / "policy.yaml"
    assert "0 decisions replayed, 0 would change" in cli(home, "policy", "simulate", "--rules", str(new_rules)).stdout

    committed = load_policy(COMMITTED)
    with app_for(home).app_context():
        record_audit("policy.decision", user_id="x", client_id="web", context={}, decision={})  # unreadable
        record_audit("user.created", user_id="x")  # not a decision
        for context in RECORDED:
            decision = evaluate(committed, context)
            record_audit("policy.decision", user_id=context.user_id, client_id=context.client_id, ip=context.ip,
                         context=context.to_dict(), decision=decision.to_dict())
    assert [evaluate(committed, c).action for c in RECORDED] == ["allow", "allow", "allow", "require_mfa", "allow"]

    out = cli(home, "policy", "simulate", "--rules", str(new_rules)).stdout
    lines = out.splitlines()
    assert lines == [
        "2024-05-06 08:05:00 UTC  bob  web  175.16.199.20  allow -> deny  rule 'blocked': country CN in CN",
        "2024-05-06 08:10:00 UTC  alice  web  81.2.69.142  allow -> require_mfa  rule 'admins-always': group admins",
        "2024-01-13 22:30:00 UTC  bob  web  81.2.69.142  allow -> require_acr phr  "
        "rule 'night': local time Sat 23:30 Europe/Paris in 22:00-06:00 (sat, sun)",
        "5 decisions replayed, 3 would change",
        "1 unreadable records skipped",
    ], out

    recent = cli(home, "policy", "simulate", "--rules", str(new_rules), "--limit", "2").stdout.splitlines()
    assert recent[-1] == "2 decisions replayed, 1 would change" and len(recent) == 2, recent

    same = cli(home, "policy", "simulate", "--rules", str(COMMITTED)).stdout
    assert same.splitlines()[0] == "5 decisions replayed, 0 would change", same

    stricter = tmp_path / "stricter.yaml"
    shutil.copy(COMMITTED, stricter)
    stricter.write_text(stricter.read_text().replace("policy: never", "policy: always"))
    out = cli(home, "policy", "simulate", "--rules", str(stricter)).stdout
    assert "4 would change" in out and "require_mfa -> " not in out
    assert "10.1.2.3  allow -> require_mfa  always policy (global): MFA required" in out


def test_simulate_refuses_a_bad_file(home, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rules:\n  - name: x\n    if: {groups: admins}\n    then: {require_acr: 3}\n")
    err = cli(home, "policy", "simulate", "--rules", str(path), ok=False).stderr
    assert str(path) in err and "rule 'x'" in err and "field 'then'" in err
    assert "Missing option '--rules'" in cli(home, "policy", "simulate", ok=False).stderr
