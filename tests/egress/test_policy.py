"""Allowlist semantics and the validation of OpenAI's ``network_policy`` shapes."""

from __future__ import annotations

from typing import Any

import pytest

from cove.egress.policy import EgressPolicy, is_ip_literal, normalize_host, parse_network_policy
from cove.errors import InvalidRequest


def test_exact_names_match_only_themselves() -> None:
    policy = EgressPolicy(("api.example.test",))
    assert policy.allows("api.example.test")
    assert policy.allows("API.Example.TEST.")  # case and one trailing dot do not matter
    assert not policy.allows("example.test")
    assert not policy.allows("sub.api.example.test")
    assert not policy.allows("api.example.test.evil.test")
    assert not policy.allows("xapi.example.test")


def test_wildcards_match_subdomains_at_any_depth_but_not_the_bare_domain() -> None:
    policy = EgressPolicy(("*.example.test",))
    assert policy.allows("a.example.test")
    assert policy.allows("a.b.c.example.test")
    assert not policy.allows("example.test")
    assert not policy.allows("badexample.test")
    assert not policy.allows("example.test.evil.test")
    both = EgressPolicy(("*.example.test", "example.test"))
    assert both.allows("example.test") and both.allows("a.example.test")


def test_names_are_idna_normalized() -> None:
    policy = EgressPolicy(("bücher.example.test",))
    assert policy.allowed_domains == ("xn--bcher-kva.example.test",)
    assert policy.allows("xn--bcher-kva.example.test")
    assert policy.allows("BÜCHER.example.test")
    assert normalize_host("Example.TEST.") == "example.test"


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.1", "::1", "[::1]", "127.1", "0x7f000001", "2130706433",
                                  "0177.0.0.1", "1.2.3.04", "fe80::1%eth0"])
def test_ip_literals_in_every_spelling_are_recognized(host: str) -> None:
    assert is_ip_literal(host)
    assert not EgressPolicy(("example.test",)).allows(host)


@pytest.mark.parametrize("host", ["example.test", "a-b.example.test", "0x7f.example.test", "123abc.test"])
def test_names_are_not_ip_literals(host: str) -> None:
    assert not is_ip_literal(host)


def allowlist(domains: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "allowlist", "allowed_domains": domains, **extra}


def test_parse_disabled_and_allowlist() -> None:
    assert parse_network_policy({"type": "disabled"}) is None
    policy = parse_network_policy(allowlist(["API.example.test", "*.cdn.example.test", "api.example.test"]))
    assert policy is not None
    assert policy.allowed_domains == ("api.example.test", "*.cdn.example.test")
    assert policy.allows("x.cdn.example.test")


@pytest.mark.parametrize(("data", "param"), [
    (None, "network_policy"),
    ({"type": "open"}, "network_policy.type"),
    ({"type": "disabled", "allowed_domains": ["a.test"]}, "network_policy.allowed_domains"),
    (allowlist([]), "network_policy.allowed_domains"),
    (allowlist("example.test"), "network_policy.allowed_domains"),
    (allowlist([3]), "network_policy.allowed_domains"),
    (allowlist(["ok.test", "10.0.0.1"]), "network_policy.allowed_domains[1]"),
    (allowlist(["[::1]"]), "network_policy.allowed_domains[0]"),
    (allowlist(["127.1"]), "network_policy.allowed_domains[0]"),
    (allowlist(["https://example.test"]), "network_policy.allowed_domains[0]"),
    (allowlist(["example.test/path"]), "network_policy.allowed_domains[0]"),
    (allowlist(["example.test:443"]), "network_policy.allowed_domains[0]"),
    (allowlist(["exa mple.test"]), "network_policy.allowed_domains[0]"),
    (allowlist(["-bad.test"]), "network_policy.allowed_domains[0]"),
    (allowlist(["a..test"]), "network_policy.allowed_domains[0]"),
    (allowlist(["*"]), "network_policy.allowed_domains[0]"),
    (allowlist(["*.test"]), "network_policy.allowed_domains[0]"),
    (allowlist(["api.*.example.test"]), "network_policy.allowed_domains[0]"),
    (allowlist(["*api.example.test"]), "network_policy.allowed_domains[0]"),
    (allowlist(["**.example.test"]), "network_policy.allowed_domains[0]"),
    (allowlist(["a" * 64 + ".test"]), "network_policy.allowed_domains[0]"),
    (allowlist(["ok.test"], extra=1), "network_policy.extra"),
    (allowlist(["ok.test"], domain_secrets={}), "network_policy.domain_secrets"),
    (allowlist(["ok.test"], domain_secrets=[{"domain": "other.test", "name": "K", "value": "v"}]),
     "network_policy.domain_secrets[0].domain"),
    (allowlist(["ok.test"], domain_secrets=[{"domain": "ok.test", "name": "1K", "value": "v"}]),
     "network_policy.domain_secrets[0].name"),
    (allowlist(["ok.test"], domain_secrets=[{"domain": "ok.test", "name": "K", "value": ""}]),
     "network_policy.domain_secrets[0].value"),
    (allowlist(["ok.test"], domain_secrets=[{"domain": "ok.test", "name": "K"}]),
     "network_policy.domain_secrets[0]"),
    (allowlist(["ok.test"], domain_secrets=[{"domain": "ok.test", "name": "K", "value": "a\r\nX-Forged: 1"}]),
     "network_policy.domain_secrets[0].value"),
    (allowlist(["ok.test"], domain_secrets=[{"domain": "ok.test", "name": "K", "value": "tab\there"}]),
     "network_policy.domain_secrets[0].value"),
    (allowlist(["ok.test"], domain_secrets=[{"domain": "ok.test", "name": "K", "value": "a"},
                                            {"domain": "ok.test", "name": "K", "value": "b"}]),
     "network_policy.domain_secrets[1].name"),
])
def test_parse_rejects_bad_input_naming_the_param(data: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_network_policy(data)
    assert info.value.param == param
    assert info.value.status_code == 400


def test_domain_secrets_are_kept_but_never_printed() -> None:
    policy = parse_network_policy(allowlist(
        ["api.example.test", "*.example.test"],
        domain_secrets=[{"domain": "api.example.test", "name": "API_KEY", "value": "s3cr3t-value"},
                        {"domain": "*.example.test", "name": "OTHER", "value": "0ther-s3cr3t"}]))
    assert policy is not None
    assert [(s.domain, s.name, s.value) for s in policy.domain_secrets] == [
        ("api.example.test", "API_KEY", "s3cr3t-value"), ("*.example.test", "OTHER", "0ther-s3cr3t")]
    placeholders = [s.placeholder for s in policy.domain_secrets]
    assert all(p.startswith("cove_secret_") and len(p) == 52 for p in placeholders)
    assert len(set(placeholders)) == 2
    for text in (repr(policy), str(policy), repr(policy.domain_secrets[0])):
        assert "s3cr3t" not in text and "cove_secret_" not in text
        assert "API_KEY" in repr(policy)


def test_secrets_apply_to_their_domain_only() -> None:
    policy = parse_network_policy(allowlist(
        ["api.example.test", "*.example.test"],
        domain_secrets=[{"domain": "api.example.test", "name": "EXACT", "value": "1"},
                        {"domain": "*.example.test", "name": "WILD", "value": "2"}]))
    assert policy is not None
    assert [s.name for s in policy.secrets_for("api.example.test")] == ["EXACT", "WILD"]
    assert [s.name for s in policy.secrets_for("a.b.example.test")] == ["WILD"]
    assert policy.secrets_for("example.test") == ()
    assert policy.secrets_for("api.example.test.evil.test") == ()
    assert [s.name for s in policy.secrets_for("xapi.example.test")] == ["WILD"]
    assert policy.secrets_for("badexample.test") == ()
