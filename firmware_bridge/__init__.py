"""firmware_bridge: live sensors (BLE through bleak, serial through pyserial) into the on-device runtime.

Protocol parsers (`firmware_bridge.protocols`) are pure, sans-IO classes kept apart from transports and
simulators. Nothing here imports torch: this runs on the device.
"""
