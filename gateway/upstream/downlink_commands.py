"""A pending command from upstream enters the normal command lifecycle (and so the safety gate)."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.commands import CommandRefused, CommandService
from gateway.upstream.config_doc import as_command


class UpstreamCommands:
    """Submits upstream commands; the answer is the command's status or ``refused:<reason>``."""

    def __init__(self, commands: CommandService) -> None:
        self._commands = commands

    async def submit(self, raw: Mapping[str, object]) -> str:
        """Submit one command (source ``upstream``)."""
        cmd = as_command(raw)
        try:
            record = await self._commands.submit(
                str(cmd.get("zone_uid") or ""),
                str(cmd.get("channel") or ""),
                str(cmd["cmd"]),
                dict(cmd.get("params") or {}),
                node_uid=cmd.get("node_uid"),
                source="upstream",
                cmd_id=cmd.get("cmd_id"),
            )
        except CommandRefused as exc:
            return f"refused:{exc.reason}"
        return str(record["status"])
