"""The peer: identity, signaling client, WebRTC rooms and reliable messaging (issue M3)."""
