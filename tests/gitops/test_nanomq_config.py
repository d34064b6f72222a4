"""The NanoMQ configuration (HOCON) parses, requires mutual TLS on 8883, admits no anonymous client,
denies whatever the ACL does not allow, and includes exactly the ACL and password files the operator
writes, at the paths where the Deployment mounts them."""

from __future__ import annotations

import base64
import inspect
import re
from pathlib import Path

import gitops_build as gb
import pytest
from pyhocon import ConfigFactory, ConfigTree

from weatherfleet import identities
from weatherfleet.reconcilers import broker

CONF = gb.GITOPS / "base" / "nanomq" / "nanomq.conf"
ACL_PATH = "/etc/nanomq/acl/nanomq_acl.conf"  # contracts.md
PWD_PATH = "/etc/nanomq/pwd/nanomq_pwd.conf"
DEVICES = ["balcony", "greenhouse", "street"]


def nanomq_problems(config: ConfigTree) -> list[str]:
    """What a NanoMQ config lacks for weatherfleet's security model."""
    problems = []
    ssl = config.get("listeners.ssl", None)
    if ssl is None:
        return ["no listeners.ssl"]
    if not str(ssl.get("bind", "")).endswith(":8883"):
        problems.append(f"TLS listener binds {ssl.get('bind')!r}, not port 8883")
    if ssl.get("verify_peer", False) is not True:
        problems.append("verify_peer is not true: client certificates are not checked")
    if ssl.get("fail_if_no_peer_cert", False) is not True:
        problems.append("fail_if_no_peer_cert is not true: clients without a certificate get in")
    for key in ("keyfile", "certfile", "cacertfile"):
        if not ssl.get(key, None):
            problems.append(f"listeners.ssl.{key} is missing")
    tcp = config.get("listeners.tcp", None)
    if tcp is not None and not str(tcp.get("bind", "")).startswith("127.0.0.1:"):
        problems.append(f"plain TCP listener reachable on {tcp.get('bind')!r}")
    for name in ("ws", "wss"):
        if config.get(f"listeners.{name}", None) is not None:
            problems.append(f"listeners.{name} is open")
    auth = config.get("auth", ConfigTree())
    if auth.get("allow_anonymous", True) is not False:
        problems.append("allow_anonymous is not false")
    if auth.get("no_match", "allow") != "deny":
        problems.append("no_match is not deny")
    return problems


def _parse_with_includes(tmp_path: Path, acl: str, passwords: str, text: str | None = None) -> ConfigTree:
    """Parse nanomq.conf with its include paths pointed at files holding `acl` and `passwords`."""
    text = CONF.read_text() if text is None else text
    assert f'{{include "{ACL_PATH}"}}' in text and f'{{include "{PWD_PATH}"}}' in text
    (tmp_path / "acl.conf").write_text(acl)
    (tmp_path / "pwd.conf").write_text(passwords)
    text = text.replace(ACL_PATH, str(tmp_path / "acl.conf")).replace(PWD_PATH, str(tmp_path / "pwd.conf"))
    return ConfigFactory.parse_string(text)


@pytest.fixture
def operator_files() -> tuple[str, str]:
    """The ACL and password file exactly as the operator renders them for a fleet."""
    if "device_ids" in inspect.signature(broker.nanomq_acl).parameters:  # per-device rules
        acl = broker.nanomq_acl("garden", DEVICES, topic_prefix="sensors")
    else:  # `${username}` rules that do not grow with the fleet
        acl = broker.nanomq_acl("garden", topic_prefix="sensors")
    users = {d: f"generated-{d}" for d in DEVICES} | {i: f"generated-{i}" for i in identities.SERVICES}
    return acl, broker.nanomq_passwords("garden", users)


def test_config_parses_and_carries_the_security_settings(tmp_path: Path, operator_files) -> None:
    config = _parse_with_includes(tmp_path, *operator_files)
    assert nanomq_problems(config) == []
    assert config["auth.deny_action"] == "disconnect"


def _topic_matches(pattern: str, topic: str) -> bool:
    """MQTT wildcard match of a rule's topic filter against a topic (or a subscription filter)."""
    p_levels, t_levels = pattern.split("/"), topic.split("/")
    for i, level in enumerate(p_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(p_levels) == len(t_levels)


def permits(rules: list, user: str, action: str, topic: str) -> bool:
    """NanoMQ's ACL semantics: rules top to bottom, the first that matches decides; none -> no_match
    (deny in our config). `${username}` in a rule's topic stands for the client's username."""
    for rule in rules:
        if rule.get("username", "#") not in ("#", user):
            continue
        if rule.get("action", "pubsub") not in ("pubsub", action):
            continue
        topics = [t.replace("${username}", user) for t in rule.get("topics", ["#"])]
        if not any(_topic_matches(t, topic) for t in topics):
            continue
        return rule["permit"] == "allow"
    return False


def test_includes_resolve_to_the_operators_files(tmp_path: Path, operator_files) -> None:
    config = _parse_with_includes(tmp_path, *operator_files)
    passwords = config["auth.password"]
    assert set(passwords) == set(DEVICES) | set(identities.SERVICES)
    assert passwords["balcony"] == "generated-balcony"
    rules = [dict(r) for r in config["auth.acl.rules"]]
    assert rules and rules[-1]["permit"] == "deny"
    allowed = [
        ("balcony", "publish", "sensors/balcony/measurements"),
        ("balcony", "subscribe", "ota/balcony/#"),
        (identities.INGEST, "subscribe", "sensors/#"),
        (identities.OTAFLUX, "publish", "ota/balcony"),
        (identities.OPERATOR, "subscribe", "sensors/+/status"),
    ]
    denied = [
        ("balcony", "publish", "sensors/street/measurements"),
        ("balcony", "subscribe", "ota/street/#"),
        ("balcony", "publish", "ota/balcony"),
        (identities.INGEST, "publish", "sensors/balcony/measurements"),
        (identities.OTAFLUX, "subscribe", "sensors/#"),
        ("intruder", "subscribe", "#"),
    ]
    assert [a for a in allowed if not permits(rules, *a)] == []
    assert [d for d in denied if permits(rules, *d)] == []


def test_a_missing_include_is_noticed(tmp_path: Path) -> None:
    """pyhocon ignores a missing include silently; so does the check above unless it asserts content."""
    text = CONF.read_text().replace(ACL_PATH, str(tmp_path / "absent.conf"))
    text = text.replace(PWD_PATH, str(tmp_path / "absent-too.conf"))
    config = ConfigFactory.parse_string(text)
    assert "rules" not in config.get("auth.acl", ConfigTree())


def test_the_seed_files_parse_and_admit_nobody(tmp_path: Path, infrastructure: list[dict]) -> None:
    seed_acl = gb.find(infrastructure, "ConfigMap", "nanomq-acl")["data"][broker.NANOMQ_ACL_KEY]
    seed_secret = gb.find(infrastructure, "Secret", "nanomq-passwords")
    seed_pwd = seed_secret.get("stringData", {}).get(broker.NANOMQ_PASSWORD_KEY)
    if seed_pwd is None:
        seed_pwd = base64.b64decode(seed_secret["data"][broker.NANOMQ_PASSWORD_KEY]).decode()
    config = _parse_with_includes(tmp_path, seed_acl, seed_pwd)
    assert list(config["auth.acl.rules"]) == []
    assert len(config.get("auth.password", ConfigTree())) == 0
    assert nanomq_problems(config) == []


def test_auth_block_agrees_with_what_the_operator_expects(tmp_path: Path, operator_files) -> None:
    ours = _parse_with_includes(tmp_path, *operator_files)["auth"]
    expected_text = broker.NANOMQ_AUTH_BLOCK
    for path in (ACL_PATH, PWD_PATH):
        assert path in expected_text
    expected = ConfigFactory.parse_string(re.sub(r"\w+ = \{include [^}]*\}\n", "", expected_text))["auth"]
    for key in expected:
        assert ours[key] == expected[key], key


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("verify_peer = true", "verify_peer = false", "verify_peer"),
        ("fail_if_no_peer_cert = true", "fail_if_no_peer_cert = false", "fail_if_no_peer_cert"),
        ("allow_anonymous = false", "allow_anonymous = true", "allow_anonymous"),
        ("no_match = deny", "no_match = allow", "no_match"),
        ('bind = "127.0.0.1:1883"', 'bind = "0.0.0.0:1883"', "plain TCP"),
        ('bind = "0.0.0.0:8883"', 'bind = "0.0.0.0:8884"', "8883"),
    ],
)
def test_the_check_catches_a_weakened_config(tmp_path: Path, operator_files, old, new, expected) -> None:
    text = CONF.read_text()
    assert old in text
    config = _parse_with_includes(tmp_path, *operator_files, text=text.replace(old, new))
    assert any(expected in p for p in nanomq_problems(config))


def test_deployment_mounts_what_the_config_reads(
    infrastructure: list[dict], tmp_path: Path, operator_files
) -> None:
    config = _parse_with_includes(tmp_path, *operator_files)
    deployment = gb.find(infrastructure, "Deployment", "nanomq")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def volume_file(path: str) -> tuple[dict, str]:
        directory, file = path.rsplit("/", 1)
        mount = mounts.get(directory) or mounts.get(path)
        assert mount is not None, f"nothing mounted at {directory}"
        return volumes[mount["name"]], mount.get("subPath", file)

    acl_volume, acl_key = volume_file(ACL_PATH)
    assert acl_volume["configMap"]["name"] == "nanomq-acl" and acl_key == broker.NANOMQ_ACL_KEY
    pwd_volume, pwd_key = volume_file(PWD_PATH)
    assert pwd_volume["secret"]["secretName"] == "nanomq-passwords" and pwd_key == broker.NANOMQ_PASSWORD_KEY
    for setting, key in (("keyfile", "tls.key"), ("certfile", "tls.crt"), ("cacertfile", "ca.crt")):
        volume, file = volume_file(config[f"listeners.ssl.{setting}"])
        assert volume["secret"]["secretName"] == "nanomq-tls" and file == key
    conf_volume, _ = volume_file("/etc/nanomq/nanomq.conf")
    assert container["command"][-1] == "/etc/nanomq/nanomq.conf"
    assert (
        gb.find(infrastructure, "ConfigMap", conf_volume["configMap"]["name"])["data"]["nanomq.conf"]
        == CONF.read_text()
    )
    certificate = gb.find(infrastructure, "Certificate", "nanomq-server")
    assert certificate["spec"]["secretName"] == "nanomq-tls"
    assert "server auth" in certificate["spec"]["usages"]
    assert any(p["containerPort"] == 8883 for p in container["ports"])
