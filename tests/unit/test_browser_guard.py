"""The pure parts of the browser guard: Host parsing, the Host policy, same-origin."""

from __future__ import annotations

import pytest

from app.api.security import HostPolicy, host_name, same_origin


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8000", "localhost"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("example.com.", "example.com"),
        ("[::1", None),
        ("[::1]x", None),
        ("localhost:http", None),
        ("", None),
        ("user@evil.example", None),
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_loopback_bind_answers_local_names_and_configured_hosts_only() -> None:
    policy = HostPolicy.build("127.0.0.1", ["cria.example", "*.lan"])
    for ok in ("localhost:1", "127.0.0.1", "[::1]:9", "a.localhost", "cria.example", "x.lan"):
        assert policy.allows(ok), ok
    for bad in ("evil.example", "192.168.1.2", "cria-server", "lan", "cria.example.evil"):
        assert not policy.allows(bad), bad
    assert policy.allows(None)  # no Host header: HTTP/1.0 tools, never a browser


@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
def test_every_interface_bind_answers_addresses_and_single_label_names(bind: str) -> None:
    policy = HostPolicy.build(bind, [])
    for ok in ("192.168.1.2:8000", "[fe80::1]:8000", "cria-server", "localhost"):
        assert policy.allows(ok), ok
    assert not policy.allows("evil.example")


def test_a_specific_bind_address_is_answered() -> None:
    policy = HostPolicy.build("192.168.1.2", [])
    assert policy.allows("192.168.1.2:8000")
    assert not policy.allows("192.168.1.3:8000")
    assert HostPolicy.build("::1", []).allows("[::1]:8000")


def test_star_turns_the_host_check_off() -> None:
    assert HostPolicy.build("127.0.0.1", ["*"]).allows("anything.example")


def test_same_origin() -> None:
    assert same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert same_origin("http://localhost", "LOCALHOST")
    assert not same_origin("http://127.0.0.1:8001", "127.0.0.1:8000")
    assert not same_origin("null", "127.0.0.1:8000")
    assert not same_origin("file://127.0.0.1:8000", "127.0.0.1:8000")
    assert not same_origin("http://127.0.0.1:8000", None)
