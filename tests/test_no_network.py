"""The suite's network guard (tests/conftest.py no_network): a connection outside loopback is refused
before it is made and fails the test; loopback works; subprocesses get a proxy nobody answers."""
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest


def test_outside_loopback_is_refused_before_connecting(no_network):
    # documentation addresses (never routed anyway): refused before any packet, as an OSError
    # (conftest's NetworkUsed) so that code handling "offline" handles it
    with socket.socket(socket.AF_INET) as s, pytest.raises(OSError, match="tests may not use the network"):
        s.connect(("192.0.2.1", 80))
    with socket.socket(socket.AF_INET6) as s, pytest.raises(OSError, match="tests may not use the network"):
        s.connect(("2001:db8::1", 443, 0, 0))
    with socket.socket() as s, pytest.raises(OSError, match="tests may not use the network"):
        s.connect_ex(("10.1.2.3", 22))
    assert no_network == ["192.0.2.1 port 80", "2001:db8::1 port 443", "10.1.2.3 port 22"]
    no_network.clear()                        # asked for here; otherwise the teardown fails the test


def test_a_web_request_goes_to_the_dead_proxy_and_counts(no_network):
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen("http://example.com/", timeout=5)    # no name lookup: the proxy would do it
    assert no_network == ["a web request through the test's dead proxy (meant for the internet)"]
    no_network.clear()


def test_loopback_is_allowed(no_network):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(2)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
        with socket.socket() as s:
            assert s.connect_ex(server.getsockname()) == 0
    assert no_network == []


def test_a_subprocess_web_request_is_refused():
    p = subprocess.run([sys.executable, "-c", "import urllib.request as u; u.urlopen('http://example.com/', timeout=5)"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "Connection refused" in p.stderr, p.stderr[-1000:]
