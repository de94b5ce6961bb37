"""Per-greenhouse provisioning: the SD card first-boot bundle built from the fleet inventory."""
