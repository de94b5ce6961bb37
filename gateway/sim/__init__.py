"""Simulated greenhouse: tank physics and fake hardware for demos and tests."""
