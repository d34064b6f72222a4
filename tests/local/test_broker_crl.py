"""The local mode's Mosquitto checks the operator's CRL: the ConfigMap `weatherfleet-crl` mounted as the
kubelet stand-in mounts it, copied for Mosquitto's `crlfile`, and re-read on SIGHUP when it changes. A real
Mosquitto over mutual TLS: a revoked device's connection attempt is refused, others keep connecting, and a
mounted file that is not a CRL never replaces the last good one."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import pytest

from weatherfleet.local.broker import BrokerInputs, LocalBroker
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.pki import LocalCA
from weatherfleet.reconcilers.broker import MOSQUITTO_ACL_KEY, mosquitto_acl
from weatherfleet.services.process import free_port, wait_until


def _connects(port: int, issued, device: str) -> bool:
    """True when Mosquitto answers CONNECT with success within 10 s; False when the TLS handshake or the
    connection is refused."""
    settings = MqttSettings(host="127.0.0.1", port=port, ca=issued.ca, cert=issued.cert, key=issued.key)
    client = make_client(settings, device)
    answered, result = threading.Event(), []

    def on_connect(_c, _u, _f, reason, _p=None) -> None:
        result.append(not reason.is_failure)
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_args: answered.set()
    try:
        client.connect("127.0.0.1", port)
    except (ssl.SSLError, OSError):
        return False
    client.loop_start()
    try:
        return answered.wait(10) and result == [True]
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.fixture
def ca(tmp_path) -> LocalCA:
    return LocalCA(tmp_path / "pki")  # its own CA: revoking here touches no other test's list


@pytest.fixture
def broker(tmp_path, ca):
    local_ca = ca
    server = local_ca.issue("crl-broker-under-test", server_names=["127.0.0.1"], client=False)
    tls, acl_dir, crl_dir = tmp_path / "tls", tmp_path / "acl", tmp_path / "crl"
    for folder in (tls, acl_dir, crl_dir):
        folder.mkdir()
    for name, path in (("ca.crt", server.ca), ("tls.crt", server.cert), ("tls.key", server.key)):
        (tls / name).write_bytes(Path(path).read_bytes())
    (acl_dir / MOSQUITTO_ACL_KEY).write_text(mosquitto_acl("garden", ["crl-dev-a", "crl-dev-b"]))
    # what the operator writes before anything is revoked: an empty list signed by the CA
    (crl_dir / "ca.crl").write_bytes(local_ca.write_crl(set()).read_bytes())
    broker = LocalBroker(
        tmp_path / "mosquitto", free_port(), BrokerInputs(tls=tls, acls=[("mosquitto", acl_dir)], crl=crl_dir)
    )
    (tmp_path / "mosquitto").mkdir()
    broker.start()
    yield broker, crl_dir
    broker.stop()


def test_a_revoked_device_is_refused_after_the_mounted_crl_changes(broker, ca):
    broker, crl_dir = broker
    local_ca = ca
    a, b = local_ca.issue("crl-dev-a"), local_ca.issue("crl-dev-b")
    assert "crlfile" in (broker.directory / "mosquitto.conf").read_text()
    assert _connects(broker.port, a, "crl-dev-a") and _connects(broker.port, b, "crl-dev-b")

    # the operator revoked dev-a: the kubelet stand-in updates the mounted file, its change calls reload()
    revoked = local_ca.revoke(Path(a.cert))
    (crl_dir / "ca.crl").write_bytes(revoked.read_bytes())
    broker.reload()
    assert broker.reloads == 1
    assert broker.crl_path.read_bytes() == revoked.read_bytes()
    wait_until(lambda: not _connects(broker.port, a, "crl-dev-a"), 15, "the revoked device refused")
    assert _connects(broker.port, b, "crl-dev-b")

    # a mounted file that is not a CRL is not taken: the last good list stays in force
    (crl_dir / "ca.crl").write_text("not a list\n")
    broker.reload()
    assert broker.reloads == 1
    assert broker.crl_path.read_bytes() == revoked.read_bytes()
    assert not _connects(broker.port, a, "crl-dev-a")
    assert _connects(broker.port, b, "crl-dev-b")
