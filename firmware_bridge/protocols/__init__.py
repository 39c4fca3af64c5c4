"""Sensor protocols as pure, sans-IO classes: bytes in, samples out; commands out as bytes. No I/O, no torch."""
