"""The local broker takes NanoMQ's files as the operator writes them: the ACL means in Mosquitto what it
means in NanoMQ (checked rule by rule against the NanoMQ evaluator, then enforced by a real Mosquitto),
the password file becomes `mosquitto_passwd` entries, and a changed ACL is reloaded with SIGHUP."""

from __future__ import annotations

import importlib.util
import itertools
import json
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from weatherfleet import identities
from weatherfleet.local.broker import (
    BrokerInputs,
    LocalBroker,
    UntranslatableAcl,
    mosquitto_acl_from_nanomq,
    nanomq_passwords,
)
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.reconcilers.broker import (
    MOSQUITTO_ACL_KEY,
    MOSQUITTO_PASSWORD_KEY,
    NANOMQ_ACL_KEY,
    NANOMQ_PASSWORD_KEY,
    mosquitto_acl,
    mosquitto_password_line,
    mosquitto_passwords,
    nanomq_acl,
)
from weatherfleet.reconcilers.broker import (
    nanomq_passwords as render_passwords,
)
from weatherfleet.services.process import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("nanomq_acl", REPO / "tests" / "foundation" / "nanomq_acl.py")
nanomq_eval = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nanomq_eval)

USERS = ["dev-01", "dev-02", identities.INGEST, identities.OPERATOR, identities.OTAFLUX]


class MosquittoAcl:
    """Mosquitto's ACL check, as its documentation and security_default.c define it: a user's own
    `topic` lines and every `pattern` (with %u) apply; any matching `deny` refuses, else any matching grant
    of the access allows, else the default is to deny."""

    def __init__(self, text: str) -> None:
        self.users: dict[str, list[tuple[str, str]]] = {}
        self.patterns: list[tuple[str, str]] = []
        user = None
        for line in text.splitlines():
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] == "user":
                user = words[1]
                self.users.setdefault(user, [])
            elif words[0] == "topic":
                self.users.setdefault(user, []).append((words[1], words[2]))
            elif words[0] == "pattern":
                self.patterns.append((words[1], words[2]))

    def allowed(self, user: str, action: str, topic: str) -> bool:
        want = "write" if action == "publish" else "read"
        rules = self.users.get(user, []) + [(a, t.replace("%u", user)) for a, t in self.patterns]
        check = nanomq_eval.topic_matches if action == "publish" else nanomq_eval.filter_covered
        if any(a == "deny" and check(t, topic) for a, t in rules):
            return False
        return any(a in (want, "readwrite") and check(t, topic) for a, t in rules)


TOPICS = [
    "sensors/{u}/measurements", "sensors/{u}/status", "sensors/{other}/measurements", "sensors/#",
    "sensors/+/status", "sensors/+/ota", "ota/{u}/notify", "ota/{other}/notify", "ota/#", "twin/{u}/desired",
    "twin/{u}/csr", "twin/{other}/csr", "twin/+/csr", "twin/+/desired", "$SYS/broker/uptime", "elsewhere",
]  # fmt: skip


def test_the_translated_acl_grants_what_nanomq_grants():
    text = nanomq_acl("garden", "sensors")
    nano = nanomq_eval.NanoAcl(text)
    mosq = MosquittoAcl(mosquitto_acl_from_nanomq(text))
    differences = []
    for user, other in itertools.permutations(USERS, 2):
        for action, template in itertools.product(("publish", "subscribe"), TOPICS):
            topic = template.format(u=user, other=other)
            if action == "publish" and ("+" in topic or "#" in topic):
                continue
            if nano.allowed(user, action, topic) != mosq.allowed(user, action, topic):
                differences.append((user, action, topic, nano.allowed(user, action, topic)))
    # Mosquitto cannot deny one access while granting another on the same topic: a service keeps the
    # device pattern's access below its own name (no device can be named like a service)
    assert differences
    assert all(
        user in identities.SERVICES and f"/{user}/" in f"/{topic}/" and not granted
        for user, _action, topic, granted in differences
    ), differences


def test_rules_mosquitto_cannot_express_are_refused():
    with pytest.raises(UntranslatableAcl):
        mosquitto_acl_from_nanomq(
            'rules = [\n  {"permit": "deny", "username": "#", "action": "publish", "topics": ["x"]}\n]\n'
        )
    with pytest.raises(UntranslatableAcl):
        mosquitto_acl_from_nanomq(
            'rules = [\n  {"permit": "allow", "username": "#", "action": "publish", "topics": ["a/x${username}"]}\n]\n'
        )


def test_password_file_round_trip_and_hash_format():
    users = nanomq_passwords(render_passwords("garden", {"dev-01": "s3cret", identities.INGEST: 'quo"te'}))
    assert users == {"dev-01": "s3cret", identities.INGEST: 'quo"te'}
    line = mosquitto_password_line("dev-01", "s3cret", salt=b"0123456789ab")
    user, hashed = line.split(":", 1)
    assert user == "dev-01" and hashed.startswith("$7$101$") and len(hashed.split("$")) == 5


class Client:
    def __init__(self, port: int, issued, username: str | None, password: str | None) -> None:
        settings = MqttSettings(host="127.0.0.1", port=port, ca=issued.ca, cert=issued.cert, key=issued.key)
        self.client = make_client(settings, f"t-{username}-{free_port()}")
        if username:
            self.client.username_pw_set(username, password)
        self.connected = threading.Event()
        self.refused = threading.Event()
        self.messages: list[str] = []
        self.client.on_connect = lambda _c, _u, _f, rc, _p=None: (
            self.refused if rc.is_failure else self.connected
        ).set()
        self.client.on_message = lambda _c, _u, m: self.messages.append(m.topic)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_mosquitto_enforces_nanomq_logins_and_reloads_a_changed_acl(tmp_path, local_ca):
    """A NanoMQ fleet's files mounted as the operator wrote them: a device needs certificate *and* its
    password; it may publish only below its own topic; a new device in the files works after the
    SIGHUP the local broker sends when the mounted files change."""
    server = local_ca.issue("broker-under-test", server_names=["127.0.0.1"], client=False)
    tls, acl_dir, pwd_dir = tmp_path / "tls", tmp_path / "acl", tmp_path / "pwd"
    for folder in (tls, acl_dir, pwd_dir):
        folder.mkdir()
    (tls / "ca.crt").write_bytes(Path(server.ca).read_bytes())
    (tls / "tls.crt").write_bytes(Path(server.cert).read_bytes())
    (tls / "tls.key").write_bytes(Path(server.key).read_bytes())
    (acl_dir / NANOMQ_ACL_KEY).write_text(nanomq_acl("garden", "sensors"))
    passwords = {"dev-01": "pw-one", identities.INGEST: "pw-ingest"}
    (pwd_dir / NANOMQ_PASSWORD_KEY).write_text(render_passwords("garden", passwords))
    broker = LocalBroker(
        tmp_path / "mosquitto",
        free_port(),
        BrokerInputs(tls=tls, acls=[("nanomq", acl_dir)], passwords=[pwd_dir]),
    )
    (tmp_path / "mosquitto").mkdir()
    broker.start()
    clients = []
    try:
        wrong = Client(broker.port, local_ca.issue("dev-01"), "dev-01", "not-the-password")
        clients.append(wrong)
        assert wrong.refused.wait(10) and not wrong.connected.is_set()
        ingest = Client(broker.port, local_ca.issue(identities.INGEST), identities.INGEST, "pw-ingest")
        device = Client(broker.port, local_ca.issue("dev-01"), "dev-01", "pw-one")
        clients += [ingest, device]
        assert ingest.connected.wait(10) and device.connected.wait(10)
        ingest.client.subscribe("sensors/#", 1)
        wait_until(lambda: True, 1, "")
        import time

        time.sleep(0.5)
        device.client.publish("sensors/dev-01/measurements", "ok", qos=1).wait_for_publish(5)
        device.client.publish("sensors/dev-02/measurements", "spoofed", qos=1).wait_for_publish(5)
        wait_until(lambda: "sensors/dev-01/measurements" in ingest.messages, 10, "the device's own reading")
        time.sleep(0.5)
        assert "sensors/dev-02/measurements" not in ingest.messages  # denied by the ACL

        # a second device appears in the operator's files: the mounted folder changes, the broker reloads
        late = Client(broker.port, local_ca.issue("dev-02"), "dev-02", "pw-two")
        clients.append(late)
        assert late.refused.wait(10)
        late.stop()
        (pwd_dir / NANOMQ_PASSWORD_KEY).write_text(
            render_passwords("garden", {**passwords, "dev-02": "pw-two"})
        )
        broker.reload()
        assert broker.reloads == 1
        broker.reload()  # nothing changed: no second SIGHUP
        assert broker.reloads == 1
        again = Client(broker.port, local_ca.issue("dev-02"), "dev-02", "pw-two")
        clients.append(again)
        assert again.connected.wait(10)
        again.client.publish("sensors/dev-02/measurements", json.dumps({"t": 1}), qos=1).wait_for_publish(5)
        wait_until(lambda: "sensors/dev-02/measurements" in ingest.messages, 10, "dev-02 after the reload")
    finally:
        for c in clients:
            c.stop()
        broker.stop()


def test_a_mosquitto_fleet_keeps_its_own_acl_and_certificate_identity(tmp_path):
    acl_dir = tmp_path / "acl"
    acl_dir.mkdir()
    text = mosquitto_acl("garden", ["dev-01"], "sensors")
    (acl_dir / MOSQUITTO_ACL_KEY).write_text(text)
    logins_dir = tmp_path / "logins"
    logins_dir.mkdir()
    (logins_dir / MOSQUITTO_PASSWORD_KEY).write_text(mosquitto_passwords({identities.INGEST: "pw"}))
    inputs = BrokerInputs(tls=tmp_path, acls=[("mosquitto", acl_dir)], service_logins=[logins_dir])
    broker = LocalBroker(tmp_path, 1, inputs)
    acl, passwords, logins = broker.render()
    assert acl == text and passwords == "" and not broker.nanomq
    assert logins == mosquitto_passwords({identities.INGEST: "pw"})  # the operator's file, as it is
    _ = mqtt  # paho is what the real clients above use


def _tls_folder(folder: Path, local_ca) -> Path:
    server = local_ca.issue("broker-under-test", server_names=["127.0.0.1"], client=False)
    folder.mkdir()
    for name, path in (("ca.crt", server.ca), ("tls.crt", server.cert), ("tls.key", server.key)):
        (folder / name).write_bytes(Path(path).read_bytes())
    return folder


def _session(port: int, issued, client_id: str, login: tuple[str, str] | None = None) -> list:
    """A connected client (MQTT 3.1.1, clean session) and the list its disconnections are counted in."""
    settings = MqttSettings(host="127.0.0.1", port=port, ca=issued.ca, cert=issued.cert, key=issued.key,
                            username=login[0] if login else None, password=login[1] if login else None)  # fmt: skip
    client, connected, drops = make_client(settings, client_id), threading.Event(), []
    client.on_connect = lambda _c, _u, _f, rc, _p=None: connected.set() if not rc.is_failure else None
    client.on_disconnect = lambda *_args: drops.append(1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert connected.wait(10), client_id
    return [client, drops]


def test_the_local_broker_binds_a_mosquitto_fleets_boards_and_emulates_nanomq_without_binding(
    tmp_path, local_ca
):
    """The local mode's Mosquitto, from the operator's files: for a Mosquitto fleet a device certificate
    connecting as another device gets its own session (the victim stays); for a NanoMQ fleet, emulated
    with NanoMQ's semantics, a device with its own valid login still takes another's session — the residue
    docs/security.md names, which the emulation must show rather than hide."""
    tls = _tls_folder(tmp_path / "tls", local_ca)
    kinds = {
        "mosquitto": (MOSQUITTO_ACL_KEY, mosquitto_acl("garden", ["dev-01", "dev-02"]), MOSQUITTO_PASSWORD_KEY,
                      mosquitto_passwords({identities.INGEST: "pw-ingest"})),
        "nanomq": (NANOMQ_ACL_KEY, nanomq_acl("garden", "sensors"), NANOMQ_PASSWORD_KEY,
                   render_passwords("garden", {"dev-01": "pw-1", "dev-02": "pw-2", identities.INGEST: "pw-ingest"})),
    }  # fmt: skip
    for kind, (acl_key, acl, pwd_key, pwd) in kinds.items():
        acl_dir, pwd_dir = tmp_path / kind / "acl", tmp_path / kind / "pwd"
        acl_dir.mkdir(parents=True)
        pwd_dir.mkdir()
        (acl_dir / acl_key).write_text(acl)
        (pwd_dir / pwd_key).write_text(pwd)
        inputs = BrokerInputs(tls=tls, acls=[(kind, acl_dir)])
        (inputs.passwords if kind == "nanomq" else inputs.service_logins).append(pwd_dir)
        broker = LocalBroker(tmp_path / kind / "mosquitto", free_port(), inputs).start()
        logins = {"dev-01": ("dev-01", "pw-1"), "dev-02": ("dev-02", "pw-2")} if kind == "nanomq" else {}
        sessions = []
        try:
            ingest = _session(broker.services_port, local_ca.issue(identities.INGEST), "weatherfleet-ingest-0",
                              (identities.INGEST, "pw-ingest"))  # fmt: skip
            victim = _session(broker.port, local_ca.issue("dev-01"), "dev-01", logins.get("dev-01"))
            sessions += [ingest, victim]
            sessions.append(_session(broker.port, local_ca.issue("dev-02"), "dev-01", logins.get("dev-02")))
            for client, _drops in (ingest, sessions[-1]):
                client.publish("probe", b"", qos=1).wait_for_publish(5)
            if kind == "mosquitto":
                victim[0].publish("probe", b"", qos=1).wait_for_publish(5)
                assert (victim[1], ingest[1]) == ([], [])
            else:
                wait_until(lambda drops=victim[1]: drops, 10, "dev-01 taken over (NanoMQ cannot bind)")
        finally:
            for client, _drops in sessions:
                client.loop_stop()
                client.disconnect()
            broker.stop()
