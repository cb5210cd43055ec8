"""The DPoP proof checker (RFC 9449 4.3), fed proofs made with PyJWT (tests/dpop_proofs.py)."""

from __future__ import annotations

import threading
import time

import pytest

from oidc_provider.oauth.dpop import (DPoPError, MemoryReplayCache, NonceSource, ProofChecker,
                                      check_resource_request, normalize_url)
from tests.dpop_proofs import DPoPKey, ath, b64url, thumbprint, unsigned_proof

URL = "https://op.example.com/oidc/token"
TOKEN = "eyJ.access.token"


@pytest.fixture(scope="module")
def key():
    return DPoPKey("ES256")


def refused(checker, values, method="POST", url=URL, **kwargs) -> DPoPError:
    with pytest.raises(DPoPError) as caught:
        checker.check(values, method, url, **kwargs)
    return caught.value


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "EdDSA"])
def test_a_good_proof_gives_the_keys_rfc7638_thumbprint(alg):
    signer = DPoPKey(alg)
    proof = ProofChecker().check([signer.proof("POST", URL)], "POST", URL)
    assert proof.jkt == signer.jkt == thumbprint(signer.jwk)
    assert proof.claims["htm"] == "POST"


def test_thumbprint_of_the_rfc7638_example_key():
    """RFC 7638 3.1's example RSA key and its published thumbprint."""
    from joserfc.jwk import RSAKey

    example = {"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
               "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
                    "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQ"
                    "MicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2Nc"
                    "Rwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}
    assert thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert RSAKey.import_key(example).thumbprint() == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_malformed_and_misplaced_proofs_are_refused(key):
    checker = ProofChecker()
    other = DPoPKey("ES256")
    # a jwk of one key, signed by another
    swapped = other.proof("POST", URL, header={"jwk": key.jwk})
    cases = {
        "no header": ([], "required"),
        "two headers": ([key.proof("POST", URL), key.proof("POST", URL)], "exactly one"),
        "joined headers": ([key.proof("POST", URL) + ", " + key.proof("POST", URL)], "exactly one"),
        "not a JWT": (["abc"], "well-formed"),
        "typ JWT": ([key.proof("POST", URL, header={"typ": "JWT"})], "typ"),
        "no typ": ([key.proof("POST", URL, header={"typ": None})], "typ"),
        "alg none": ([unsigned_proof("POST", URL, "none")], "alg"),
        "HS256": ([unsigned_proof("POST", URL, "HS256", key="s" * 32)], "alg"),
        "no jwk": ([key.proof("POST", URL, header={"jwk": None})], "jwk"),
        "private jwk": ([key.proof("POST", URL, header={"jwk": key.private_jwk})], "public key"),
        "symmetric jwk": ([key.proof("POST", URL, header={"jwk": {"kty": "oct", "k": b64url(b"k" * 32)}})], "jwk"),
        "another key's signature": ([swapped], "signature"),
        "tampered": ([key.proof("POST", URL)[:-4] + "AAAA"], "signature"),
        "other method": ([key.proof("GET", URL)], "method"),
        "lower-case method": ([key.proof("post", URL)], "method"),
        "other URL": ([key.proof("POST", "https://op.example.com/oidc/userinfo")], "URL"),
        "other host": ([key.proof("POST", "https://evil.example.com/oidc/token")], "URL"),
        "other scheme": ([key.proof("POST", "http://op.example.com/oidc/token")], "URL"),
        "htu not a URL": ([key.proof("POST", "/oidc/token")], "URL"),
        "no htu": ([key.proof("POST", URL, drop=("htu",))], "htu"),
        "no htm": ([key.proof("POST", URL, drop=("htm",))], "htm"),
        "no jti": ([key.proof("POST", URL, drop=("jti",))], "jti"),
        "long jti": ([key.proof("POST", URL, jti="j" * 257)], "jti"),
        "no iat": ([key.proof("POST", URL, drop=("iat",))], "iat"),
        "iat as text": ([key.proof("POST", URL, iat="now")], "iat"),
        "too old": ([key.proof("POST", URL, iat=time.time() - 61)], "too old"),
        "from the future": ([key.proof("POST", URL, iat=time.time() + 30)], "future"),
    }
    for name, (values, reason) in cases.items():
        error = refused(checker, values)
        assert error.error == "invalid_dpop_proof", name
        assert reason.lower() in error.description.lower(), (name, error.description)


@pytest.mark.filterwarnings("ignore::UserWarning")  # both libraries warn about the 1024-bit key
def test_small_rsa_keys_and_algorithms_not_allowed_are_refused():
    small = DPoPKey("RS256", rsa_bits=1024)
    assert "2048" in refused(ProofChecker(), [small.proof("POST", URL)]).description
    edwards = DPoPKey("EdDSA")
    only_es256 = ProofChecker(algorithms=("ES256",))
    assert "alg" in refused(only_es256, [edwards.proof("POST", URL)]).description
    with pytest.raises(ValueError):
        ProofChecker(algorithms=("HS256",))


def test_htu_ignores_query_and_fragment_and_normalizes(key):
    checker = ProofChecker()
    for htu in ["https://op.example.com/oidc/token?x=1#frag", "HTTPS://OP.example.COM:443/oidc/token",
                "https://op.example.com/oidc/./x/../token", "https://op.example.com/%6fidc/token"]:
        assert checker.check([key.proof("POST", htu)], "POST", URL).jkt == key.jkt, htu


@pytest.mark.parametrize("url, normal", [
    ("https://a.example/p", "https://a.example/p"),
    ("https://A.Example:443", "https://a.example/"),
    ("http://a.example:80/x?y#z", "http://a.example/x"),
    ("http://127.0.0.1:5000/oidc/token", "http://127.0.0.1:5000/oidc/token"),
    ("https://a.example/a/b/../../c/./d", "https://a.example/c/d"),
    ("https://a.example/%7euser/%2f", "https://a.example/~user/%2F"),
    ("https://[::1]:8443/p", "https://[::1]:8443/p"),
    ("https://user@a.example/p", None),
    ("ftp://a.example/p", None),
    ("https://a.example:99999/p", None),
    ("/relative", None),
])
def test_normalize_url(url, normal):
    assert normalize_url(url) == normal


def test_a_proof_is_single_use_even_under_concurrency(key):
    checker = ProofChecker()
    proof = key.proof("POST", URL)
    assert checker.check([proof], "POST", URL)
    assert "already used" in refused(checker, [proof]).description
    # many threads, one new proof: exactly one wins
    proof = key.proof("POST", URL)
    results, start = [], threading.Barrier(8)

    def use():
        start.wait()
        try:
            checker.check([proof], "POST", URL)
            results.append("ok")
        except DPoPError:
            results.append("refused")

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ok"] + ["refused"] * 7


def test_the_same_jti_from_another_key_is_another_proof(key):
    checker = ProofChecker()
    assert checker.check([key.proof("POST", URL, jti="j1")], "POST", URL)
    assert checker.check([DPoPKey().proof("POST", URL, jti="j1")], "POST", URL)


def test_ath_binds_the_proof_to_the_access_token(key):
    checker = ProofChecker()
    assert checker.check([key.proof("GET", URL, access_token=TOKEN)], "GET", URL, access_token=TOKEN)
    assert "no ath" in refused(checker, [key.proof("GET", URL)], "GET", access_token=TOKEN).description
    wrong = key.proof("GET", URL, access_token="another.token")
    assert "does not match" in refused(checker, [wrong], "GET", access_token=TOKEN).description
    assert key.proof("GET", URL, access_token=TOKEN)  # ath is base64url(sha256(token))
    assert ath(TOKEN) == b64url(__import__("hashlib").sha256(TOKEN.encode()).digest())


def test_nonces_are_demanded_and_only_recent_ones_accepted(key):
    nonces = NonceSource(b"k" * 32, lifetime=300)
    checker = ProofChecker(nonces=nonces)
    missing = refused(checker, [key.proof("POST", URL)])
    assert missing.error == "use_dpop_nonce" and nonces.check(missing.nonce)
    assert checker.check([key.proof("POST", URL, nonce=missing.nonce)], "POST", URL)
    now = time.time()
    assert nonces.check(nonces.issue(now - 300), now)  # the previous bucket is still good
    stale = nonces.issue(now - 900)
    assert not nonces.check(stale, now)
    assert refused(checker, [key.proof("POST", URL, nonce=stale)]).error == "use_dpop_nonce"
    assert refused(checker, [key.proof("POST", URL, nonce="made-up")]).error == "use_dpop_nonce"
    other_server = NonceSource(b"x" * 32).issue()
    assert refused(checker, [key.proof("POST", URL, nonce=other_server)]).error == "use_dpop_nonce"
    # not demanded: a checker without nonces, or require_nonce=False
    assert ProofChecker().check([key.proof("POST", URL)], "POST", URL)
    assert checker.check([key.proof("POST", URL)], "POST", URL, require_nonce=False)


def test_resource_requests_bind_the_token_to_the_proof_key(key):
    checker = ProofChecker()
    bound = {"sub": "x", "cnf": {"jkt": key.jkt}}

    def check(claims, scheme, proofs):
        return check_resource_request(checker, claims, scheme, TOKEN, proofs, "GET", URL)

    assert check(bound, "DPoP", [key.proof("GET", URL, access_token=TOKEN)]).jkt == key.jkt
    assert check({"sub": "x"}, "Bearer", []) is None
    cases = {
        "bound token as Bearer": (bound, "Bearer", [], "invalid_token"),
        "Bearer token as DPoP": ({"sub": "x"}, "DPoP", [key.proof("GET", URL, access_token=TOKEN)], "invalid_token"),
        "another key": (bound, "DPoP", [DPoPKey().proof("GET", URL, access_token=TOKEN)], "invalid_token"),
        "no proof": (bound, "DPoP", [], "invalid_dpop_proof"),
        "no ath": (bound, "DPoP", [key.proof("GET", URL)], "invalid_dpop_proof"),
    }
    for name, (claims, scheme, proofs, error) in cases.items():
        with pytest.raises(DPoPError) as caught:
            check(claims, scheme, proofs)
        assert caught.value.error == error, name


def test_memory_replay_cache_forgets_after_the_ttl():
    cache = MemoryReplayCache(max_entries=2)
    assert cache.add("a", 1, 0.05) and not cache.add("a", 1, 0.05)
    time.sleep(0.06)
    assert cache.add("a", 1, 10)
    assert cache.add("b", 1, 10) and cache.add("c", 1, 10)  # full: expired entries are swept
    assert not cache.add("b", 1, 10)
