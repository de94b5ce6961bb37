"""Re-export: ``RateLimitedLog`` lives in ``drivers/ratelog.py`` so the drivers can use it without importing gateway."""

from drivers.ratelog import RateLimitedLog

__all__ = ["RateLimitedLog"]
