"""JSON encoding of estimate bodies, shared by the ZeroMQ and MQTT estimate publishers."""

from __future__ import annotations

import msgspec

__all__ = ["encode_body", "decode_body"]

encode_body = msgspec.json.Encoder().encode  # NaN/inf become null: valid JSON for dashboards
decode_body = msgspec.json.decode
