"""The etcd backend against an etcd that wants TLS, a client certificate and a password.

The store's settings are the daemon's (-store-ca, -store-cert, -store-key,
PULLER_STORE_USER/PASSWORD); a wrong password or a missing CA is told as what
it is, not as an etcd that does not answer.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import requests

from puller.cluster.etcd import EtcdBackend, EtcdBackendConfig
from puller.cluster.etcdclient import EtcdClient, EtcdDown
from puller.cluster.storeurl import parse_store_url

from ..certs import certificate
from ..etcdenv import EtcdCluster
from ..testenv import wait_until

PASSWORD = "s3cret-for-the-test"
TEXT = "name: web\nbash: docker run busybox\nrepo: busybox\ntag: v1\n"


@pytest.fixture
def password_etcd(tmp_path):
    """An etcd speaking TLS only, with auth on (user root, tokens living 2 s)."""
    cert, key = certificate(str(tmp_path))
    cluster = EtcdCluster(str(tmp_path / "etcd"), tls=(cert, key), client_certs=False,
                          extra=("--auth-token-ttl", "2")).start()
    try:
        cluster.etcdctl("user", "add", f"root:{PASSWORD}")
        cluster.etcdctl("auth", "enable")
        yield cluster, parse_store_url(cluster.url(), ca=cert, user="root", password=PASSWORD)
    finally:
        cluster.close()


@pytest.fixture
def cert_etcd(tmp_path):
    """An etcd speaking TLS only, to clients that show a certificate of its CA."""
    cert, key = certificate(str(tmp_path))
    cluster = EtcdCluster(str(tmp_path / "etcd"), tls=(cert, key)).start()
    try:
        yield cluster, parse_store_url(cluster.url(), ca=cert, cert=cert, key=key)
    finally:
        cluster.close()


@pytest.fixture
def backends(tmp_path):
    made: list[EtcdBackend] = []

    def make(config, name: str) -> EtcdBackend:
        directory = tmp_path / f"dir-{name}"
        directory.mkdir(exist_ok=True)
        backend = EtcdBackend(EtcdBackendConfig(name, str(directory), config),
                              on_change=lambda: None,
                              handlers={"status": lambda body: {"services": {}}})
        made.append(backend.start())
        return backend

    yield make
    for backend in made:
        backend.close()


def read(backend: EtcdBackend, name: str) -> str | None:
    try:
        with open(os.path.join(backend.config.directory, f"{name}.yml")) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def edit_arrives(one: EtcdBackend, two: EtcdBackend) -> None:
    with open(os.path.join(one.config.directory, "web.yml"), "w") as handle:
        handle.write(TEXT)
    assert one.sync_dir(), "the edit was not published"
    wait_until(lambda: read(two, "web") == TEXT, timeout=10, what="web on node 2")


def test_definitions_sync_through_etcd_with_a_password(password_etcd, backends, monkeypatch):
    # many hosts set REQUESTS_CA_BUNDLE; requests let it override -store-ca
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    cluster, config = password_etcd
    one, two = backends(config, "n1"), backends(config, "n2")
    assert one.wait_connected(10) and two.wait_connected(10)
    edit_arrives(one, two)
    assert TEXT in cluster.etcdctl("--user", f"root:{PASSWORD}", "get", "--prefix",
                                   "/puller/services/")


def test_an_expired_auth_token_is_renewed_without_an_outage(password_etcd, backends):
    _cluster, config = password_etcd
    one, two = backends(config, "n1"), backends(config, "n2")
    assert one.wait_connected(10) and two.wait_connected(10)
    time.sleep(4)  # the tokens (TTL 2 s) expire
    edit_arrives(one, two)
    assert not one.problems() and not two.problems()


def test_definitions_sync_through_etcd_with_client_certificates(cert_etcd, backends):
    _cluster, config = cert_etcd
    one, two = backends(config, "n1"), backends(config, "n2")
    assert one.wait_connected(10) and two.wait_connected(10)
    edit_arrives(one, two)


def test_a_wrong_password_is_told_as_such(password_etcd):
    _cluster, config = password_etcd
    client = EtcdClient(dataclasses.replace(config, password="wrong-password"))
    with pytest.raises(EtcdDown) as error:
        client.get_prefix("/puller/")
    assert "authentication failed" in str(error.value)
    assert "wrong-password" not in str(error.value)  # a password is never shown


def test_tls_without_the_ca_is_told_as_such(password_etcd):
    _cluster, config = password_etcd
    client = EtcdClient(dataclasses.replace(config, ca=None, cert=None, key=None))
    with pytest.raises(EtcdDown) as error:
        client.get_prefix("/puller/")
    assert "-store-ca" in str(error.value)


def test_a_missing_client_certificate_is_told_as_such(cert_etcd):
    _cluster, config = cert_etcd
    client = EtcdClient(dataclasses.replace(config, cert=None, key=None))
    with pytest.raises(EtcdDown) as error:
        client.get_prefix("/puller/")
    assert "-store-cert" in str(error.value)
