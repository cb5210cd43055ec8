"""The benchmark's HTTP client (bench/run.py: Http) reads what the two servers send: bodies by
Content-Length or chunked, cookies set and deleted, and connections the server closes."""

import socket
import threading

import pytest

from bench.run import Http

CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: s=; Max-Age=0; Path=/\r\n\r\n"
           b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")


def sized(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


@pytest.fixture
def server():
    """A loopback server answering each request on a connection with the next canned answer;
    an answer of None closes the connection without one (an idle keep-alive connection closed)."""
    listener = socket.create_server(("127.0.0.1", 0))
    answers, requests, connections = [], [], [0]

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections[0] += 1
            with conn:
                pending = b""
                while answers:
                    while b"\r\n\r\n" not in pending:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        pending += chunk
                    if b"\r\n\r\n" not in pending:
                        break
                    head, _, pending = pending.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    while len(pending) < length:
                        pending += conn.recv(65536)
                    requests.append((head.decode(), pending[:length]))
                    pending = pending[length:]
                    answer = answers.pop(0)
                    if answer is None:
                        requests.pop()
                        break
                    conn.sendall(answer)
                    if b"Connection: close" in answer:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], answers, requests, connections
    listener.close()


def test_bodies_by_length_and_chunked_and_the_cookies_they_set(server):
    port, answers, requests, connections = server
    answers += [sized(b'{"a":1}', "Set-Cookie: s=abc; HttpOnly; Path=/", "Content-Type: application/json"),
                CHUNKED]
    http_ = Http(port)
    status, headers, body = http_.request("POST", "/token", {"grant_type": "x y"}, {"Authorization": "Basic QQ=="})
    assert (status, body, headers["content-type"]) == (200, b'{"a":1}', "application/json")
    assert http_.cookies == {"s": "abc"}
    status, headers, body = http_.request("GET", "http://127.0.0.1:1/page?q=1")
    assert (status, body) == (200, b"hello world")
    assert http_.cookies == {}  # Max-Age=0 deletes it
    first, second = requests
    assert first[0].startswith("POST /token HTTP/1.1") and "Authorization: Basic QQ==" in first[0]
    assert first[1] == b"grant_type=x+y"
    assert second[0].startswith("GET /page?q=1 HTTP/1.1") and "Cookie: s=abc" in second[0]
    assert connections[0] == 1  # one keep-alive connection for both
    http_.close()


def test_a_closed_connection_is_opened_again(server):
    port, answers, requests, connections = server
    answers += [sized(b"one", "Connection: close"), sized(b"two"), None, sized(b"three")]
    http_ = Http(port)
    assert http_.request("GET", "/1")[2] == b"one"
    assert http_.request("GET", "/2")[2] == b"two"  # after the server's Connection: close
    assert http_.request("GET", "/3")[2] == b"three"  # the server dropped it idle: sent again once
    assert [head.split()[1] for head, _ in requests] == ["/1", "/2", "/3"]
    assert connections[0] == 3
    http_.close()
