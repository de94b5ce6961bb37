"""The gateway's side of the upstream link: the sync wiring, and what an upstream config or command becomes here.

One concept per module: ``sync`` (uplink, downlink, retention and their alert hooks), ``config_doc`` (the shape
of an upstream config), ``config_merge`` (merging it with the local wiring and applying it), ``recipes_translate``
(central recipe format to the gateway's) and ``downlink_commands`` (an upstream command enters the lifecycle).
"""

from gateway.upstream.recipes_translate import recipes_from_upstream
from gateway.upstream.sync import UpstreamSync

__all__ = ["UpstreamSync", "recipes_from_upstream"]
