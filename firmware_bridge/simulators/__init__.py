"""Stand-ins for the physical sensors: sans-IO sensor models that speak the devices' exact bytes, replaying
real recorded signals, behind a real pty (serial) or a bleak backend (BLE); faults on demand."""
