"""MQTT: the embedded broker, the controller's link to it, and the payloads it accepts."""
