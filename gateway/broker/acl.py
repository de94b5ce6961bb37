"""Topic ACL of the embedded broker, independent of amqtt's ACL plugins (which fail to load in 0.12)."""

from __future__ import annotations

from firmware_contracts.topics import may_publish, may_subscribe


class TopicACL:
    """Nodes publish only under their own uid (and to hydro/node_hello) and subscribe only to their own
    command/config topics. Services and demo-mode anonymous clients are unrestricted.
    """

    def __init__(self, allow_anonymous: bool) -> None:
        self.allow_anonymous = allow_anonymous

    def can_publish(self, username: str | None, role: str | None, topic: str) -> bool:
        """May this client publish on ``topic``?"""
        if role == "service" or (role is None and self.allow_anonymous):
            return True
        return role == "node" and username is not None and may_publish(username, topic)

    def can_subscribe(self, username: str | None, role: str | None, topic_filter: str) -> bool:
        """May this client subscribe to ``topic_filter``?"""
        if role == "service" or (role is None and self.allow_anonymous):
            return True
        return role == "node" and username is not None and may_subscribe(username, topic_filter)
