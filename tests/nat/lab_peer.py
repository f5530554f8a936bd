"""A peer for the NAT lab: joins a room and prints its events as JSON lines.

    python -m tests.nat.lab_peer URL --node ws://198.18.0.1:8000 --data-dir D
        [--say TEXT] [--send-file F] [--accept-to DIR] [--connect-timeout S] [--wait S]
        [--turn-transport udp|tcp|tls]

Every line carries `t`, seconds since `join` was called. A connected line
also has `path` ('direct' or 'relayed'), `pair` (the candidate types of
the selected pair, local first), `remote` (the address of its remote
candidate) and `gathered` (this side's candidates, "type address"). ICE
offers every address of the namespace (PAGEMESH_ICE_HOSTS is not read).
SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

from peer.cli import event_json
from peer.mesh import MeshConfig
from peer.peer import Connected, FileDone, MemberUnreachable, Peer, PeerConfig, Room
from peer.webrtc import PeerLink


def emit(data: dict[str, Any], started: float) -> None:
    data["t"] = round(time.monotonic() - started, 3)
    print(json.dumps(data), flush=True)


def line(event: Any, room: Room) -> dict[str, Any]:
    data = event_json(event)
    if isinstance(event, Connected):
        link = room.links.get(event.key)
        if link is not None:
            data.update(candidates(link))
    elif isinstance(event, MemberUnreachable):
        data = {"event": "unreachable", "key": event.key.hex(), "message": event.message}
    elif isinstance(event, FileDone):
        data = {"event": "file-done", "id": event.id, "path": str(event.path or "")}
    return data


def candidates(link: PeerLink) -> dict[str, Any]:
    """The selected pair (types, and the remote address) and what this side gathered."""
    pair = link.selected_pair()
    ice = link.pc.sctp.transport.transport if link.pc.sctp is not None else None
    nominated = list(ice._connection._nominated.values()) if ice is not None else []
    gathered = ice.iceGatherer.getLocalCandidates() if ice is not None else []
    return {
        "pair": list(pair) if pair else None,
        "remote": nominated[0].remote_candidate.host if nominated else None,
        "gathered": sorted(f"{c.type} {c.ip}" for c in gathered),
    }


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    config = PeerConfig(
        mesh=MeshConfig(connect_timeout=args.connect_timeout), turn_transport=args.turn_transport
    )
    async with Peer(args.data_dir, args.node, config=config, accept_files_to=args.accept_to) as me:
        started = time.monotonic()
        room = await me.join(args.url)
        emit({"event": "in-room"}, started)
        if args.say:
            await room.send(args.say)

        async def report() -> None:
            sent_file = False
            async for event in room.events():
                emit(line(event, room), started)
                if isinstance(event, Connected) and args.send_file and not sent_file:
                    sent_file = True
                    await room.send_file(args.send_file)

        reporter = asyncio.create_task(report())
        try:
            await asyncio.wait_for(stop.wait(), args.wait)
        except TimeoutError:
            pass
        finally:
            reporter.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--node", action="append", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--say")
    parser.add_argument("--send-file", type=Path)
    parser.add_argument("--accept-to", type=Path)
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--wait", type=float, default=120.0, help="seconds before it leaves")
    parser.add_argument(
        "--turn-transport", default="", help="the node's TURN URL to use: udp, tcp or tls"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
