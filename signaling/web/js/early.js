// What a page starts before its other modules have arrived and run: its IndexedDB
// (the identity) and the WebSocket to its node, the two things its join waits for
// first. boot.js calls start() as soon as it runs (index.html loads it `async`,
// ahead of app.js and the whole module graph); Peer.open and SignalingClient.connect
// take what was started instead of starting again. Each is taken at most once; a
// socket nobody takes within TAKE_WITHIN ms is closed. Once the page has asked for
// either, start() no longer starts it (boot.js may run after app.js on a busy
// machine: it must not open a second socket nobody will take).
//
// The socket only connects and keeps what the node sends (its challenge) until
// taken: the hello needs the key, which the peer signs with once it has it.

import { Store } from "./store.js";

export const TAKE_WITHIN = 10000;
const MAX_FRAMES = 8; // the node sends its challenge and waits for our hello

let early = null; // {url, ws, frames, timer}
let storeOpening = null;
let socketAsked = false;
let storeAsked = false;

export function start(nodeUrl) {
  // Open the default IndexedDB and a WebSocket to `nodeUrl` (ws:// or wss://, the
  // node's URL as the peer names it; null: no socket).
  if (!storeAsked && storeOpening === null) {
    storeOpening = Store.open();
    storeOpening.catch(() => {}); // Peer.open sees the failure when it takes it
  }
  if (nodeUrl === null || early !== null || socketAsked) return;
  let ws;
  try {
    ws = new WebSocket(`${nodeUrl}/v1/ws`);
  } catch {
    return; // SignalingClient tries again, and says why
  }
  const frames = [];
  ws.onmessage = (event) => {
    if (frames.length < MAX_FRAMES) frames.push(event);
  };
  ws.onerror = () => {};
  const timer = setTimeout(() => {
    if (early?.ws === ws) early = null;
    ws.close();
  }, TAKE_WITHIN);
  early = { url: nodeUrl, ws, frames, timer };
}

export function takeSocket(nodeUrl) {
  // The socket start() opened to `nodeUrl`, with the events it heard so far (to be
  // replayed in order once the taker listens), or null.
  socketAsked = true;
  const found = early;
  if (found === null || found.url !== nodeUrl) return null;
  early = null;
  clearTimeout(found.timer);
  found.ws.onmessage = null;
  if (found.ws.readyState !== WebSocket.CONNECTING && found.ws.readyState !== WebSocket.OPEN) return null;
  return { ws: found.ws, frames: found.frames };
}

export function takeStore() {
  // The default Store start() began to open (a promise), or null.
  storeAsked = true;
  const opening = storeOpening;
  storeOpening = null;
  return opening;
}
