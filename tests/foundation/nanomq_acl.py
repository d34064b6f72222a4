"""A stand-in for NanoMQ's ACL evaluation (no NanoMQ can run here), as its documentation describes it:
rules are tried top to bottom and the first that matches the user, action and topic decides; `#` as
username matches every user; `${username}` in a rule topic is replaced by the client's username; a rule
without `action` matches every action and one without `topics` every topic; `no_match` decides the rest.
Topic matching follows MQTT: `+` one level, `#` the remaining levels."""

from __future__ import annotations

from pyhocon import ConfigFactory


def _levels_match(pattern: list[str], topic: list[str]) -> bool:
    for i, level in enumerate(pattern):
        if level == "#":
            return True
        if i >= len(topic) or (level != "+" and level != topic[i]):
            return False
    return len(pattern) == len(topic)


def topic_matches(rule_filter: str, topic: str) -> bool:
    return _levels_match(rule_filter.split("/"), topic.split("/"))


def filter_covered(rule_filter: str, requested: str) -> bool:
    """A subscription is allowed when every topic it could match is matched by the rule's filter."""
    rule, req = rule_filter.split("/"), requested.split("/")
    for i, level in enumerate(rule):
        if level == "#":
            return True
        if i >= len(req) or req[i] == "#":
            return False
        if level == "+":
            continue
        if req[i] == "+" or level != req[i]:
            return False
    return len(rule) == len(req)


class NanoAcl:
    def __init__(self, text: str, no_match: str = "deny") -> None:
        self.rules = ConfigFactory.parse_string(text)["rules"]
        self.no_match = no_match

    def allowed(self, username: str, action: str, topic: str) -> bool:
        for rule in self.rules:
            user = rule.get("username", "#")
            if user not in ("#", username):
                continue
            if rule.get("action", "pubsub") not in ("pubsub", action):
                continue
            topics = [t.replace("${username}", username) for t in rule.get("topics", ["#"])]
            check = topic_matches if action == "publish" else filter_covered
            if any(check(t, topic) for t in topics):
                return rule["permit"] == "allow"
        return self.no_match == "allow"
