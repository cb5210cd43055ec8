"""argon2id hashing in one process: on HASH_SLOTS threads at most, the rest take turns; and the
hashes earlier releases stored."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from argon2 import PasswordHasher

from oidc_provider.authn.factors import password
from oidc_provider.serve import default_hash_slots


@pytest.fixture
def hashing(monkeypatch):
    """What argon2-cffi did while the test ran: the most hashes at the same moment, and the
    threads that computed them (malloc keeps 19 MiB for each of those threads)."""
    verify, make = PasswordHasher.verify, PasswordHasher.hash
    seen = SimpleNamespace(now=0, most=0, threads=set())
    lock = threading.Lock()

    def counted(function):
        def run(*args, **kwargs):
            with lock:
                seen.threads.add(threading.get_ident())
                seen.now += 1
                seen.most = max(seen.most, seen.now)
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    seen.now -= 1
        return run

    monkeypatch.setattr(PasswordHasher, "verify", counted(verify))
    monkeypatch.setattr(PasswordHasher, "hash", counted(make))
    return seen


def test_a_process_hashes_on_no_more_threads_than_its_slots(hashing):
    stored = password.hash_password("correct horse battery")
    guesses = ["correct horse battery", "wrong"] * (3 * password.HASH_SLOTS)
    with ThreadPoolExecutor(len(guesses)) as pool:
        matched = list(pool.map(lambda guess: password.password_matches(stored, guess), guesses))
        hashed = list(pool.map(password.hash_password, guesses[:4]))
    assert matched == [guess == "correct horse battery" for guess in guesses]
    assert all(password.password_matches(value, guess) for value, guess in zip(hashed, guesses))
    assert 1 <= hashing.most <= password.HASH_SLOTS
    assert 1 <= len(hashing.threads) <= password.HASH_SLOTS < len(guesses)


@pytest.mark.parametrize("cpus, workers, slots", [(2, 1, 2), (2, 2, 1), (2, 3, 1), (8, 2, 4), (8, 3, 3), (None, 4, 1)])
def test_serve_shares_the_cpus_among_its_workers(monkeypatch, cpus, workers, slots):
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert default_hash_slots(workers) == slots


# Written by libsodium, which computed the provider's hashes in earlier releases.
STORED_BY_LIBSODIUM = "$argon2id$v=19$m=19456,t=2,p=1$Q+bXt0ooEU56XDfGlZGZ/A$BDPVyY+DADKNmXHY7z3+fLCMCncYZ2BWtjmKoV98lo8"


def test_passwords_stored_by_earlier_releases_still_sign_in_without_a_rehash():
    assert password.password_matches(STORED_BY_LIBSODIUM, "stored before the switch")
    assert not password.password_matches(STORED_BY_LIBSODIUM, "stored before the switch!")
    assert not password.needs_rehash(STORED_BY_LIBSODIUM)


@pytest.mark.parametrize("stored", ["", "plain text", "$argon2id$v=19$m=19456,t=2,p=1$broken", "$2b$12$" + "a" * 53])
def test_a_stored_value_that_is_no_argon2_hash_matches_nothing(stored):
    assert not password.password_matches(stored, "plain text")
    assert password.needs_rehash(stored)
