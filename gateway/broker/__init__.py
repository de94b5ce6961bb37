"""The embedded amqtt broker: authentication, topic ACL, and the hand-off of inbound messages to the router."""
