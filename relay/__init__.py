"""The relay: a TURN server for peers whose NATs block a direct path (issue M4)."""
