"""Flash persistence that survives reboot and power loss: atomic files, seq counter, outbox."""
