"""The emulated-link lab's wide area network: TUN devices and a delay line between them.

python -m tests.nat.netem_router SPEC_JSON   (run in the lab's `core` namespace)

This machine's kernel has no `sch_netem` (nor `prio`), so the delays `tc netem` would
add are added here, in user space, as netem does in the kernel: every namespace of
the lab has one TUN device (`wan`), every packet it sends arrives here, is held for
the one-way latency between the sender's region and the receiver's, and is written
to the receiver's device. SPEC: {"devices": [[TUN_NAME, ADDRESS, REGION], ...],
"latency_ms": MATRIX, "jitter_ms": J, "access_ms": A, "clients": ADDRESS}.

- between two nodes: `latency_ms[src][dst]`, plus for UDP (the DHT's datagrams) a
  uniform [0, J) draw per packet, as the simulator's `NetworkModel.delay`; TCP
  segments (node links) take J/2 and keep their order, as the simulator's links;
- between the clients' address and a node of region r: `latency_ms[r][r]` + A + J/2
  (the simulator's `RoomNet` client: its region's latency, the last mile, one jitter
  draw fixed per client);
- anything to an address no device holds is dropped.

Prints {"event": "ready"} once the devices exist (the controller then moves each into
its namespace), then {"event": "stats", ...} on SIGTERM. Nothing here is a model: the
packets are the nodes' own.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import signal
import struct
import sys
from typing import Any

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
UDP = 17


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class DelayLine:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(spec.get("seed", 0))
        self.latency = [[ms / 1000.0 for ms in row] for row in spec["latency_ms"]]
        self.jitter = spec["jitter_ms"] / 1000.0
        self.access = spec["access_ms"] / 1000.0
        self.clients = bytes(map(int, spec["clients"].split(".")))
        self.fds: dict[bytes, int] = {}
        self.region: dict[bytes, int] = {}
        self.packets = self.dropped = self.errors = 0
        for name, address, region in spec["devices"]:
            key = bytes(map(int, address.split(".")))
            fd = open_tun(name)
            self.fds[key] = fd
            self.region[key] = region
            self.loop.add_reader(fd, self.read, fd)

    def delay(self, src: bytes, dst: bytes, udp: bool) -> float | None:
        if src == self.clients or dst == self.clients:
            node = dst if src == self.clients else src
            region = self.region.get(node)
            if region is None:
                return None
            return self.latency[region][region] + self.access + self.jitter / 2
        a, b = self.region.get(src), self.region.get(dst)
        if a is None or b is None:
            return None
        extra = self.rng.random() * self.jitter if udp else self.jitter / 2
        return self.latency[a][b] + extra

    def read(self, fd: int) -> None:
        while True:
            try:
                packet = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                self.errors += 1
                return
            if len(packet) < 20 or packet[0] >> 4 != 4:
                self.dropped += 1
                continue
            src, dst = packet[12:16], packet[16:20]
            out = self.fds.get(dst)
            wait = self.delay(src, dst, packet[9] == UDP) if out is not None else None
            if out is None or wait is None:
                self.dropped += 1
                continue
            self.packets += 1
            self.loop.call_later(wait, self.write, out, packet)

    def write(self, fd: int, packet: bytes) -> None:
        try:
            os.write(fd, packet)
        except OSError:  # the receiver's device is down or its queue full: a loss
            self.errors += 1


async def main() -> None:
    spec = json.loads(sys.argv[1])
    line = DelayLine(spec)
    print(json.dumps({"event": "ready"}), flush=True)
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    stats = {"packets": line.packets, "dropped": line.dropped, "errors": line.errors}
    print(json.dumps({"event": "stats", **stats}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
