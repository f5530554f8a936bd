"""Relay throughput: our TURN relay against coturn's turnserver under the same load.

Both servers run on 127.0.0.1 with the same long-term REST credentials, the
loopback peer allowed, one relay thread for coturn, and no bandwidth limit.
The load is coturn's own `turnutils_uclient` (M clients, N messages each,
ChannelData, or Send and Data indications with `--indications`; no packet
interval) echoed by `turnutils_peer`. Every message
crosses the relay twice (client to peer, peer back to client), so

    packets relayed = tot_send_msgs + tot_recv_msgs

and the rates divide by the wall time of the uclient run. CPU per packet is
the server process's user + system time over that run (from /proc).

Prints ONE JSON object. `--clients`, `--messages`, `--length` set the load.
Run as `python benchmarks/relay_throughput.py` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SECRET = "benchmark-secret"
REPO = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def wait_udp_ready(port: int, deadline: float) -> None:
    """Send a STUN Binding request until the server answers (bounded by `deadline`)."""
    request = bytes.fromhex("000100002112a442") + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        while time.monotonic() < deadline:
            probe.sendto(request, ("127.0.0.1", port))
            try:
                probe.recvfrom(2048)
                return
            except OSError:
                continue
    raise TimeoutError(f"no server answered on udp {port}")


def start_ours(port: int, uvloop: bool) -> subprocess.Popen[bytes]:
    code = (
        "import asyncio, sys\n"
        "from relay.core import RelayConfig\n"
        "from relay.server import RelayServer\n"
        "async def main():\n"
        "    config = RelayConfig(allow_peers=('127.0.0.1/32',), bandwidth_bps=0,\n"
        "                         max_allocations_per_user=10000, max_allocations=10000,\n"
        "                         max_allocations_per_source=10000)\n"
        f"    s = await RelayServer.start('127.0.0.1', {port}, {SECRET.encode()!r}, config,\n"
        "                                relay_host='127.0.0.1')\n"
        "    await asyncio.Event().wait()\n"
    )
    if uvloop:
        code += "import uvloop\nuvloop.run(main())\n"
    else:
        code += "asyncio.run(main())\n"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO)


def start_coturn(port: int) -> subprocess.Popen[bytes]:
    args = [
        "turnserver",
        "-n",  # no configuration file
        "--listening-ip=127.0.0.1",
        f"--listening-port={port}",
        "--relay-ip=127.0.0.1",
        "--use-auth-secret",
        f"--static-auth-secret={SECRET}",
        "--realm=pagemesh",
        "--relay-threads=1",
        "--allow-loopback-peers",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--no-tcp-relay",
        "--log-file=stdout",
        "--simple-log",
        "--min-port=40000",
        "--max-port=49999",
    ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_load(
    port: int, peer_port: int, clients: int, messages: int, length: int, indications: bool = False
) -> dict[str, Any]:
    args = [
        "turnutils_uclient",
        "-u",
        "bench",
        "-W",
        SECRET,
        "-e",
        "127.0.0.1",
        "-r",
        str(peer_port),
        "-p",
        str(port),
        "-m",
        str(clients),
        "-n",
        str(messages),
        "-l",
        str(length),
        "-z",
        "0",
        "-c",  # no RTCP allocations: one allocation per client
        *(["-s"] if indications else []),  # Send indications out, Data indications back
        "127.0.0.1",
    ]
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    sent = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", output)
    lost = re.search(r"Total lost packets (\d+)", output)
    if result.returncode != 0 or not sent:
        raise RuntimeError(f"turnutils_uclient failed:\n{output[-2000:]}")
    send, recv = map(int, sent[-1])
    return {
        "seconds": elapsed,
        "sent": send,
        "received": recv,
        "lost": int(lost[1]) if lost else None,
    }


def measure(
    name: str, server: subprocess.Popen[bytes], port: int, args: argparse.Namespace
) -> dict[str, Any]:
    peer_port = free_port()
    peer = subprocess.Popen(
        ["turnutils_peer", "-L", "127.0.0.1", "-p", str(peer_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_udp_ready(port, time.monotonic() + 10)
        cpu_before = cpu_seconds(server.pid)
        load = run_load(port, peer_port, args.clients, args.messages, args.length, args.indications)
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        for process in (peer, server):
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    packets = load["sent"] + load["received"]
    seconds = load["seconds"]
    return {
        "server": name,
        "packets": packets,
        "seconds": round(seconds, 3),
        "pps": round(packets / seconds, 1),
        "mbit_s": round(packets * args.length * 8 / seconds / 1e6, 3),
        "lost": load["lost"],
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_packet": round(cpu / packets * 1e6, 2) if packets else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--uvloop", action="store_true", help="run our relay on uvloop")
    parser.add_argument(
        "--indications", action="store_true", help="Send/Data indications instead of ChannelData"
    )
    args = parser.parse_args()
    for tool in ("turnserver", "turnutils_uclient", "turnutils_peer"):
        if shutil.which(tool) is None:
            print(json.dumps({"error": f"{tool} not installed (make debs)"}))
            return 1
    ours_port = free_port()
    ours = measure("pagemesh", start_ours(ours_port, args.uvloop), ours_port, args)
    coturn_port = free_port()
    coturn = measure("coturn", start_coturn(coturn_port), coturn_port, args)
    result = {
        "benchmark": "relay_throughput",
        "load": {
            "tool": "turnutils_uclient",
            "clients": args.clients,
            "messages_per_client": args.messages,
            "length": args.length,
            "mode": f"{'indications, -s' if args.indications else 'channels'}, -z 0, -c",
        },
        "event_loop": "uvloop" if args.uvloop else "asyncio",
        "ours": ours,
        "coturn": coturn,
        "ratio_pps": round(ours["pps"] / coturn["pps"], 3) if coturn["pps"] else None,
        "ratio_cpu_per_packet": (
            round(ours["cpu_us_per_packet"] / coturn["cpu_us_per_packet"], 2)
            if ours["cpu_us_per_packet"] and coturn["cpu_us_per_packet"]
            else None
        ),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
