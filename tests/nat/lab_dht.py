"""Look into the lab's nodes from inside a namespace; prints one JSON line.

python -m tests.nat.lab_dht table HOST:PORT TARGET_HEX
    the contacts the DHT node at HOST:PORT returns for `find_node(TARGET)`: with k = 20
    and a lab of a few nodes, its whole routing table, the target first if it holds it.
    Asked as a DHT client (the client id), so asking adds nobody to any table.
python -m tests.nat.lab_dht healthz URL
    the status and JSON body of GET URL.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request

from dht.wire import CLIENT_ID, FindNode, NodesReply, parse_frame, parse_reply, serialize_request


def table(address: str, target_hex: str) -> dict[str, object]:
    host, port = address.rsplit(":", 1)
    request = FindNode(CLIENT_ID, bytes.fromhex(target_hex))
    msg_id = os.urandom(20)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        for _ in range(3):  # a lost datagram is asked again, three times at most
            sock.sendto(serialize_request(msg_id, request), (host, int(port)))
            try:
                data, _ = sock.recvfrom(65536)
            except TimeoutError:
                continue
            frame = parse_frame(data)
            if frame.msg_id == msg_id:
                reply = parse_reply(request, frame.body)
                assert isinstance(reply, NodesReply)
                return {"contacts": [[c.node_id.hex(), c.host, c.port] for c in reply.contacts]}
    return {"error": "no answer"}


def healthz(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return {"status": response.status, "body": json.loads(response.read())}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": json.loads(exc.read())}


def main() -> None:
    command, *args = sys.argv[1:]
    result = table(*args) if command == "table" else healthz(*args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
