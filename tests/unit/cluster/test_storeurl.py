"""The -store URL: etcd://HOST:PORT[,HOST:PORT...]/PREFIX."""

from __future__ import annotations

import pytest

from puller.cluster.storeurl import StoreUrlError, parse_store_url


@pytest.mark.parametrize("url, endpoints, prefix", [
    ("etcd://127.0.0.1:2379/puller", (("127.0.0.1", 2379),), "/puller"),
    ("etcd://a:1,b:2,c:3/p", (("a", 1), ("b", 2), ("c", 3)), "/p"),
    ("etcd://etcd.example.com/fleet/prod/", (("etcd.example.com", 2379),), "/fleet/prod"),
    ("ETCD://[::1]:2379/x", (("::1", 2379),), "/x"),
])
def test_parses(url, endpoints, prefix):
    config = parse_store_url(url)
    assert config.endpoints == endpoints
    assert config.prefix == prefix
    assert config.key_of("services", "web") == prefix + "/services/web"
    assert not config.tls


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:2379/p", "scheme"),
    ("etcd://127.0.0.1:2379", "PREFIX"),
    ("etcd://127.0.0.1:2379/", "PREFIX"),
    ("etcd:///p", "HOST:PORT"),
    ("etcd://a:1,,b:2/p", "is not HOST:PORT"),
    ("etcd://a:99999/p", "out of range"),
    ("etcd://a b:1/p", "is not HOST:PORT"),
    ("etcd://a:1/p q", "prefix"),
    ("etcd://a:1/p//q", "prefix"),
])
def test_refuses_with_the_reason(url, says):
    with pytest.raises(StoreUrlError) as info:
        parse_store_url(url)
    assert says in str(info.value)
    assert "etcd://HOST:PORT" in str(info.value)  # and shows the form


def test_tls_and_auth_options():
    config = parse_store_url("etcd://a:1/p", ca="ca.pem", cert="c.pem", key="k.pem",
                             user="u", password="secret")
    assert config.tls and config.ca == "ca.pem" and config.user == "u"
    assert "secret" not in repr(config)


@pytest.mark.parametrize("options, says", [
    ({"cert": "c.pem"}, "-store-key"),
    ({"user": "u"}, "PULLER_STORE_PASSWORD"),
])
def test_halves_of_a_pair_are_refused(options, says):
    with pytest.raises(StoreUrlError, match=says):
        parse_store_url("etcd://a:1/p", **options)
