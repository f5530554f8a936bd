"""The simulator: the real protocol cores at 10^5..10^6 nodes on a virtual clock (issue M6)."""
