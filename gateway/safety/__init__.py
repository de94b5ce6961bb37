"""Pump safety: pure per-channel rules and the start interlock (the async loop lives beside them)."""
