"""The attacker's view: fixtures for real nodes, raw sockets and peers on loopback."""

from tests.peer.conftest import PeerFactory, loopback_ice, peers  # noqa: F401  (fixtures)
from tests.signaling.conftest import (  # noqa: F401  (fixtures)
    ClientFactory,
    NodeFactory,
    connect,
    raw,
    signaling_mesh,
)
