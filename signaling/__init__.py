"""The signaling node: page rooms over the DHT and the client WebSocket API (issue M2)."""
