"""How a failure to reach etcd is explained: the setting that fixes it is named."""
import pytest
import requests
from urllib3.exceptions import ProtocolError

from puller.cluster.etcdclient import _explain
from puller.cluster.storeurl import StoreConfig

PLAIN = StoreConfig(endpoints=(("127.0.0.1", 2379),), prefix="/puller")


def aborted(reason: BaseException) -> requests.ConnectionError:
    return requests.ConnectionError(ProtocolError("Connection aborted.", reason))


@pytest.mark.parametrize("failure", [
    # the three ways a plain request to a TLS port ends, depending on timing
    aborted(ConnectionResetError(104, "Connection reset by peer")),
    aborted(ConnectionError("RemoteDisconnected('Remote end closed connection')")),
    ValueError("Client sent an HTTP request to an HTTPS server."),
])
def test_plain_http_to_a_tls_port_names_store_ca(failure):
    assert "-store-ca" in _explain(failure, PLAIN)


def test_nothing_listening_does_not_blame_tls():
    failure = requests.ConnectionError("Failed to establish a new connection: "
                                       "[Errno 111] Connection refused")
    explained = _explain(failure, PLAIN)
    assert "-store-ca" not in explained and "Connection refused" in explained


def test_an_untrusted_certificate_names_store_ca():
    config = StoreConfig(endpoints=PLAIN.endpoints, prefix="/puller", ca="/etc/ca.pem")
    failure = requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    assert "not trusted" in _explain(failure, config)


@pytest.mark.parametrize("failure", [
    requests.exceptions.SSLError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert"),
    requests.exceptions.SSLError("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] bad certificate"),
    requests.exceptions.SSLError("EOF occurred in violation of protocol (_ssl.c:2427)"),
    aborted(ConnectionResetError(104, "Connection reset by peer")),
])
def test_a_handshake_ended_for_want_of_a_client_certificate_names_store_cert(failure):
    config = StoreConfig(endpoints=PLAIN.endpoints, prefix="/puller", ca="/etc/ca.pem")
    assert "-store-cert" in _explain(failure, config)
