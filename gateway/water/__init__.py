"""Water model: zone water_cycle settings, NC recirculation, the water-change machine, usage."""
