"""Automation at the edge: recipes, schedules, pH/EC dosing, telemetry aggregation, water usage rollup."""
