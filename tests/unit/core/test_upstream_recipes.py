"""Recipes from the central config format become valid gateway recipes."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.automation.recipes import recipe_problems
from gateway.upstream import recipes_from_upstream

EXAMPLE = Path(__file__).resolve().parents[3] / "sync" / "schemas" / "config.example.json"


def test_upstream_example_recipes_translate_and_validate():
    doc = json.loads(EXAMPLE.read_text())
    recipes = recipes_from_upstream(doc["recipes"])
    lettuce = recipes["lettuce-nft"]
    assert [p["start_day"] for p in lettuce["phases"]] == [0, 10]
    assert lettuce["phases"][0]["irrigation"] == {"times": "08:00,12:00,18:00", "duration_s": 120}
    assert lettuce["phases"][0]["lights"] == {"on": "06:00", "off": "22:00"}
    assert recipe_problems([("lettuce-nft", "2025-12-20")], recipes) == []
