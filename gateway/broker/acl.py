"""Topic ACL of the embedded broker, independent of amqtt's ACL plugins (which fail to load in 0.12)."""

from __future__ import annotations

from firmware_contracts.topics import is_gateway_only, may_publish, may_subscribe


class TopicACL:
    """Who may publish and subscribe where, for MQTT client connections.

    - Command and config topics (``…/{channel}/command``, ``…/config``): no client connection ever
      publishes there, whatever its role or the mode (service accounts and demo-mode anonymous clients
      included). Only the gateway's in-process ``EmbeddedBroker.publish`` reaches them, after the
      command checks and with a ``commands`` row; a service that needs to command uses the HTTP API.
    - Nodes publish only under their own uid (and to ``hydro/node_hello``) and subscribe only to their
      own command/config topics.
    - Services and demo-mode anonymous clients may publish anywhere else and subscribe to anything.
    """

    def __init__(self, allow_anonymous: bool) -> None:
        self.allow_anonymous = allow_anonymous

    @staticmethod
    def gateway_only(topic: str) -> bool:
        """Is ``topic`` one only the gateway publishes on (command, config)?"""
        return is_gateway_only(topic)

    def can_publish(self, username: str | None, role: str | None, topic: str) -> bool:
        """May this client connection publish on ``topic``? Never on a command or config topic."""
        if is_gateway_only(topic):
            return False
        if role == "service" or (role is None and self.allow_anonymous):
            return True
        return role == "node" and username is not None and may_publish(username, topic)

    def can_subscribe(self, username: str | None, role: str | None, topic_filter: str) -> bool:
        """May this client subscribe to ``topic_filter``?"""
        if role == "service" or (role is None and self.allow_anonymous):
            return True
        return role == "node" and username is not None and may_subscribe(username, topic_filter)
