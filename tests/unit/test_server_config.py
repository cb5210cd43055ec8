"""The production server's configuration: how `serve` builds Granian, prepares the metrics
folder and checks the configuration first; the store, metrics and logging settings; the
JSON log format."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from granian.constants import Interfaces

from oidc_provider.oauth.keys import KeyFolder, KeysNotReady
from oidc_provider.observability import JsonFormatter, RequestIdFilter, granian_log_config
from oidc_provider.serve import (argon2_build, check_configuration, cpus_of_slot, granian_server, metrics_folder,
                                 pin_worker)
from oidc_provider.settings import ConfigError, load_settings
from tests.conftest import run_cli


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("ISSUER", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "METRICS_TOKEN", "LOG_FORMAT",
                 "REDIS_SENTINEL_PASSWORD", "PROMETHEUS_MULTIPROC_DIR", "OIDC_PROVIDER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "provider.yaml"
    path.write_text(text)
    return path


# -- Granian --------------------------------------------------------------------------------

def test_granian_runs_the_app_factory_in_each_worker_over_wsgi():
    server = granian_server("127.0.0.1", 8123, workers=3, threads=6, log_format="json")
    assert server.interface == Interfaces.WSGI and server.factory is True
    assert server.target == "oidc_provider.serve:app_factory"  # each worker builds its own app after the fork
    assert (server.bind_addr, server.bind_port) == ("127.0.0.1", 8123)
    assert server.workers == 3 and server.blocking_threads == 6
    assert server.respawn_failed_workers is True and server.log_access is False


@pytest.mark.parametrize("slot, workers, cpus, share", [
    (0, 2, [0, 1], {0}), (1, 2, [0, 1], {1}),  # one CPU each, the default (a worker per CPU)
    (0, 2, [0, 1, 2, 3], {0, 2}), (1, 2, [0, 1, 2, 3], {1, 3}),  # fewer workers: CPUs shared out
    (2, 3, [4, 5], {4}), (0, 1, [0, 1, 2], {0, 1, 2}),  # more workers than CPUs: in turn; one: all
])
def test_each_worker_slot_has_its_share_of_the_cpus(slot, workers, cpus, share):
    assert cpus_of_slot(slot, workers, cpus) == share


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_a_worker_the_host_refuses_to_pin_runs_unpinned(tmp_path, monkeypatch, caplog):
    def refuse(pid, cpus):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("oidc_provider.serve._slot_lock", None)
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    with caplog.at_level(logging.WARNING, logger="oidc_provider.serve"):
        assert pin_worker(tmp_path, 2) is None
    assert "runs unpinned: [Errno 1] Operation not permitted" in caplog.text


def test_granian_logs_in_the_app_format():
    config = granian_log_config("json")
    assert config["formatters"]["generic"]["()"] == "oidc_provider.observability.JsonFormatter"
    assert config["handlers"]["console"]["stream"] == "ext://sys.stderr"
    assert granian_log_config("text")["formatters"]["access"]["()"] == "logging.Formatter"


def test_metrics_folder_is_emptied_or_made(tmp_path, clean_env):
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    clean_env.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    assert metrics_folder() == (given, False)
    assert [p.name for p in given.iterdir()] == ["keep.txt"]  # counters of an earlier run never add up

    clean_env.delenv("PROMETHEUS_MULTIPROC_DIR")
    made, temporary = metrics_folder()
    try:
        assert temporary and made.is_dir() and not any(made.iterdir())
        import os

        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(made)  # inherited by the workers
    finally:
        made.rmdir()


def test_configuration_is_checked_before_any_worker_starts(tmp_path, clean_env):
    import oidc_provider

    clean_env.setattr(oidc_provider, "BASE_DIR", tmp_path)
    config = write_yaml(tmp_path, f"keys_dir: {tmp_path / 'keys'}\nclients_file: {tmp_path / 'clients.yaml'}\n")
    clean_env.setenv("OIDC_PROVIDER_CONFIG", str(config))
    with pytest.raises(KeysNotReady, match="keys generate"):
        check_configuration()
    KeyFolder(tmp_path / "keys").generate()
    with pytest.raises(ConfigError, match="clients.yaml"):
        check_configuration()
    (tmp_path / "clients.yaml").write_text("clients: []\n")
    assert check_configuration().keys_dir == str(tmp_path / "keys")
    config.write_text("store: {backend: redis, cluster: true}\n")
    with pytest.raises(ConfigError, match="store"):
        check_configuration()


def test_serve_command_refuses_bad_options_and_missing_keys(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "provider.yaml").write_text("dev_mode: false\n")
    bad = run_cli(tmp_path, "serve", "--workers", "0", ok=False)
    assert "--workers" in bad.stderr
    assert "--hash-slots" in run_cli(tmp_path, "serve", "--hash-slots", "0", ok=False).stderr
    missing = run_cli(tmp_path, "serve", "--port", "1", ok=False)
    assert "oidc-provider keys generate" in missing.stderr


# -- store, metrics and logging settings ---------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("store: {backend: redis, redis_url: 'redis://h:6379/0', cluster: true, sentinel: {hosts: ['h:26379'], "
     "service_name: m}}", "exclude each other"),
    ("store: {backend: redis, sentinel: {hosts: ['sentinel-without-port'], service_name: m}}", "host:port"),
    ("store: {backend: redis, sentinel: {hosts: [], service_name: m}}", "store.sentinel.hosts"),
    ("store: {backend: redis, sentinel: {hosts: ['h:26379']}}", "store.sentinel.service_name"),
    ("store: {backend: sql, cluster: true}", "need backend redis"),
    ("store: {backend: redis, redis_url: 'http://h:6379'}", "redis://"),
    ("store: {backend: redis, cluster: true}", "store.redis_url"),
    ("metrics: {token: short}", "metrics.token"),
    ("logging: {format: xml}", "logging.format"),
])
def test_bad_settings_are_named(tmp_path, clean_env, text, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(write_yaml(tmp_path, text + "\n"))


def test_good_redis_topologies_load(tmp_path, clean_env):
    sentinel = load_settings(write_yaml(tmp_path, "store: {backend: redis, sentinel: {hosts: ['10.0.0.1:26379', "
                                                  "'[::1]:26380'], service_name: op}}\n"))
    assert sentinel.store.sentinel.addresses() == [("10.0.0.1", 26379), ("::1", 26380)]
    cluster = load_settings(write_yaml(tmp_path, "store: {backend: redis, redis_url: 'rediss://n1:7000', cluster: true}\n"))
    assert cluster.store.cluster and cluster.store.redis_url.startswith("rediss://")


def test_environment_sets_secrets_and_the_log_format(tmp_path, clean_env):
    clean_env.setenv("METRICS_TOKEN", "t" * 32)
    clean_env.setenv("LOG_FORMAT", "text")
    clean_env.setenv("REDIS_SENTINEL_PASSWORD", "from-env")
    settings = load_settings(write_yaml(tmp_path, "store: {backend: redis, sentinel: {hosts: ['h:26379'], "
                                                  "service_name: op}}\n"))
    assert settings.metrics.token == "t" * 32 and settings.logging.format == "text"
    assert settings.store.sentinel.password == "from-env"
    assert "from-env" not in repr(settings) and "t" * 32 not in repr(settings)


def test_defaults_json_logs_and_no_metrics_route(clean_env):
    settings = load_settings(None)
    assert settings.logging.format == "json" and settings.metrics.token is None and not settings.store.cluster


# -- the JSON log format ---------------------------------------------------------------------------

def test_json_lines_carry_the_extra_fields_and_a_request_id():
    record = logging.LogRecord("oidc_provider.audit", logging.INFO, __file__, 1, "audit %s", ("x.y",), None)
    record.audit = {"event": "x.y", "detail": {"n": 1}}
    RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "audit x.y" and line["level"] == "INFO" and line["logger"] == "oidc_provider.audit"
    assert line["request_id"] is None  # outside a request
    assert line["audit"] == {"event": "x.y", "detail": {"n": 1}} and line["time"].endswith("+00:00")


# WHEEL files as pip leaves them: PyPI's prebuilt binaries, and one `make install` built here
PYPI_WHEEL = ("Wheel-Version: 1.0\nGenerator: bdist_wheel (0.45.1)\nRoot-Is-Purelib: false\n"
              "Tag: cp39-abi3-manylinux_2_26_x86_64\nTag: cp39-abi3-manylinux_2_28_x86_64\n")
LOCAL_WHEEL = ("Wheel-Version: 1.0\nGenerator: scikit-build-core 1.1.2\nRoot-Is-Purelib: false\n"
               "Tag: cp310-abi3-linux_x86_64\n")


@pytest.mark.parametrize("wheel, build", [
    (PYPI_WHEEL, "portable"), (LOCAL_WHEEL, "compiled"),
    ("Tag: cp39-abi3-musllinux_1_2_aarch64\n", "portable"), ("Tag: cp39-abi3-macosx_11_0_arm64\n", "portable"),
    ("Tag: cp39-abi3-linux_aarch64\n", "compiled"), ("Wheel-Version: 1.0\n", "unknown"), (None, "unknown"),
])
def test_the_start_tells_which_argon2_build_hashes_passwords(wheel, build):
    assert argon2_build(wheel) == build
