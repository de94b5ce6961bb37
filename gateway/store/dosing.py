"""The ``dosing_log`` table: every dose the controller sent (caps per hour and day survive a restart)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.store.db import Database


@dataclass(frozen=True)
class DoseLogged:
    """One dose as the controller's history needs it."""

    zone_id: int
    reagent: str
    ml: float
    created_at: float


async def log_dose(
    db: Database, zone_id: int, parameter: str, reagent: str, ml: float, cmd_id: str, value_before: float,
    target: float, now: float,
) -> None:
    """Record one dose sent."""
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO dosing_log(zone_id, parameter, reagent, ml, cmd_id, value_before, target, created_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (zone_id, parameter, reagent, ml, cmd_id, value_before, target, now))


async def doses_since(db: Database, since: float) -> list[DoseLogged]:
    """Doses sent at or after ``since``, oldest first."""
    rows = await db.fetchall(
        "SELECT zone_id, reagent, ml, created_at FROM dosing_log WHERE created_at >= ? ORDER BY id", (since,))
    return [DoseLogged(int(r["zone_id"]), str(r["reagent"]), float(r["ml"]), float(r["created_at"])) for r in rows]
