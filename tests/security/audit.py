"""The dependency audit (`make audit`, run by `make test` before pytest): pip-audit over
the installed environment, against PyPI's advisory data (OSV when PyPI does not answer).

Any known vulnerability fails the build, unless IGNORED lists it with its reason (the
README repeats each one). When no advisory service answers (pip-audit cannot connect,
or finds not one of our dependencies), it prints a warning that nothing was audited and
passes: the build machine reaches PyPI's package index but not its advisory data.

    python tests/security/audit.py                  # the installed environment
    python tests/security/audit.py -r FILE          # pinned requirements (what the tests use)
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PIP_AUDIT = Path(sys.executable).with_name("pip-audit")
SERVICES = ("pypi", "osv")
# Vulnerability id -> why it does not apply to us. Empty: nothing is ignored.
IGNORED: dict[str, str] = {}


@dataclass
class Outcome:
    service: str | None  # the advisory service that answered; None: none did
    vulnerable: list[str] = field(default_factory=list)  # "name version: id (fixed in ...)"
    unaudited: list[str] = field(default_factory=list)  # dependencies the service does not know
    problem: str = ""  # why no service answered


def _findings(report: dict) -> tuple[list[str], list[str], int]:
    vulnerable, unaudited, audited = [], [], 0
    for dependency in report.get("dependencies", []):
        if "skip_reason" in dependency:
            unaudited.append(dependency["name"])
            continue
        audited += 1
        for vuln in dependency.get("vulns", []):
            if vuln["id"] in IGNORED or set(vuln.get("aliases", [])) & set(IGNORED):
                continue
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            vulnerable.append(f"{dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixed})")
    return vulnerable, unaudited, audited


def audit(target: list[str], timeout: int = 300) -> Outcome:
    """Run pip-audit on `target` (its arguments choosing what to audit), one service after another."""
    problems = []
    for service in SERVICES:
        command = [str(PIP_AUDIT), *target, "-s", service, "-f", "json", "--progress-spinner", "off",
                   "--desc", "off", "--timeout", "20"]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{service}: {exc}")
            continue
        try:
            report = json.loads(run.stdout)
        except ValueError:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            problems.append(f"{service}: {last}")
            continue
        vulnerable, unaudited, audited = _findings(report)
        if audited == 0 and unaudited:  # every lookup failed: the service is not there
            problems.append(f"{service}: none of {len(unaudited)} dependencies could be looked up")
            continue
        return Outcome(service, vulnerable, unaudited)
    return Outcome(None, problem="; ".join(problems))


def main(argv: list[str]) -> int:
    target = argv or ["--local", "--skip-editable"]  # our own package is not on PyPI
    outcome = audit(target)
    if outcome.service is None:
        message = f"dependency audit: no advisory service could be reached ({outcome.problem})"
        # The build machine reaches PyPI's package index but neither its JSON advisory API nor
        # OSV: the audit cannot decide there, so it says so loudly instead of failing every build.
        print(f"WARNING {message}: the dependencies were NOT audited", file=sys.stderr)
        return 0
    if outcome.unaudited:
        print(f"dependency audit: not known to {outcome.service}: {', '.join(outcome.unaudited)}", file=sys.stderr)
    if outcome.vulnerable:
        print("dependency audit: known vulnerabilities:\n  " + "\n  ".join(outcome.vulnerable), file=sys.stderr)
        return 1
    print(f"dependency audit ({outcome.service}): no known vulnerabilities")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
