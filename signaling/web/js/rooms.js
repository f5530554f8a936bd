// Rooms, computed in the browser as in signaling/rooms.py (docs/protocol.md
// section 2): the node only ever sees hashes, never the page's URL.

import { ProtocolError, concat, hex, packb, u16be, u32be, utf8 } from "./bytes.js";
import { sha256 } from "./crypto.js";

export const MAX_URL_LENGTH = 8192;
const TRACKING = new Set([
  "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "igshid",
  "mc_cid", "mc_eid", "_ga", "_gl", "_hsenc", "_hsmi", "mkt_tok", "oly_anon_id", "oly_enc_id",
  "vero_id",
]);
const UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
// Characters a path or a query may carry unescaped (RFC 3986 3.3, 3.4). An
// escape of one of them is decoded, except those that would change how the
// component splits: "/" in a path, "&", "=" and "+" in a query.
const PATH_SAFE = new Set(UNRESERVED + "!$&'()*+,;=:@");
const QUERY_SAFE = new Set(UNRESERVED + "!$'()*,;:@/?");
const HOST = /^(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])$/;

function requote(text, safe, keep) {
  // Normalise a component: decode escapes of safe characters, upper-case the
  // other escapes, escape what may not appear raw (docs/protocol.md 2.1).
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    const escape = c === "%" && /^[0-9A-Fa-f]{2}$/.test(text.substr(i + 1, 2));
    if (escape) {
      const decoded = String.fromCharCode(parseInt(text.substr(i + 1, 2), 16));
      out += safe.has(decoded) ? decoded : text.substr(i, 3).toUpperCase();
      i += 2;
    } else if (safe.has(c) || keep.includes(c)) {
      out += c;
    } else {
      for (const b of utf8(c)) out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
    }
  }
  return out;
}

function stripTracking(query) {
  const kept = [];
  for (const part of query.split("&")) {
    if (!part) continue;
    // Judged by its name as normalised (escapes of unreserved characters decoded), as
    // Python judges it: "%75tm_source" is "utm_source" and goes at once, so that the
    // rule applied to its own result changes nothing.
    const normal = requote(part, QUERY_SAFE, "=+");
    const name = normal.split("=", 1)[0].toLowerCase();
    if (TRACKING.has(name) || name.startsWith("utm_")) continue;
    kept.push(normal);
  }
  return kept.join("&");
}

export function canonicalUrl(input, scope = "page") {
  // The one string every client derives for a page (docs/protocol.md 2.1).
  if (input.length > MAX_URL_LENGTH) {
    throw new ProtocolError("bad-url", `URL longer than ${MAX_URL_LENGTH} characters`);
  }
  let url;
  try {
    url = new URL(input.trim());
  } catch {
    throw new ProtocolError("bad-url", "not a valid URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ProtocolError("bad-url", "only http and https pages have rooms");
  }
  const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#\\]*)/i.exec(input.trim());
  const host = authority && authority[1].replace(/^.*@/, "") ? url.hostname.toLowerCase().replace(/\.+$/, "") : "";
  if (!host) throw new ProtocolError("bad-url", "the URL has no host");
  if (!HOST.test(host)) throw new ProtocolError("bad-url", `not a valid URL: bad host ${host}`);
  const origin = `${url.protocol}//${host}${url.port ? ":" + url.port : ""}`;
  if (scope === "site") return origin + "/";
  const query = stripTracking(url.search.replace(/^\?/, ""));
  return origin + requote(url.pathname || "/", PATH_SAFE, "/") + (query ? "?" + query : "");
}

export async function roomKey(canonical, secret = null) {
  const data = utf8(canonical);
  if (secret === null) return (await sha256(concat(utf8("pagemesh/room\0"), data))).slice(0, 20);
  if (!secret.length) throw new ProtocolError("bad-secret", "a private room's secret must not be empty");
  const framed = concat(u32be(data.length), data, secret);
  return (await sha256(concat(utf8("pagemesh/private-room\0"), framed))).slice(0, 20);
}

export async function layerKey(room, layer) {
  if (room.length !== 20) throw new ProtocolError("bad-room", "a room key is 20 bytes");
  if (!Number.isInteger(layer) || layer < 0 || layer > 65535) {
    throw new ProtocolError("bad-layer", "a layer is in 0..65535");
  }
  return (await sha256(concat(utf8("pagemesh/layer\0"), room, u16be(layer)))).slice(0, 20);
}

export function presenceValue(room, layer, nodeId, url) {
  // Compact JSON with sorted keys, byte for byte as signaling/rooms.py makes it.
  const body = { layer, node: hex(nodeId), room: hex(room), url, v: 1 };
  return utf8(JSON.stringify(body));
}

export async function presencePayload(peer, room, layer, nodeId, url, seq, expires) {
  // What a client signs for its presence: the DHT record's payload (1.4, 2.4).
  const key = await layerKey(room, layer);
  return packb(["pagemesh-record/1", key, peer, seq, expires, presenceValue(room, layer, nodeId, url)]);
}

export function helloMessage(nonce, nodeId) {
  return concat(utf8("pagemesh-hello/1\0"), nonce, nodeId);
}
