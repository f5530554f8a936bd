// The page every node serves at `/`: the chat (chat.js) with the room in the
// address. The room travels in the page's fragment (`/#room=URL&group=N&friend=KEY`,
// address.js), which no browser sends to the node; old `?room=` links are
// rewritten before anything connects. The query configures the page itself:
// `name`, `node` (more nodes to try before this one), `relay=only`, `device`.

import { inviteLink, moveQueryToFragment, parseFragment, showRoom } from "./address.js";
import { banner, join, startChat, ui } from "./chat.js";
import { MAX_LAYER, Peer } from "./peer.js";

moveQueryToFragment(location, history); // before anything connects: the room stays in the fragment

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const home = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
const nodes = [...params.getAll("node"), home];

// What the chat asks of the page holding it: the room in the address and the join box.
const host = {
  showRoom(canonical) {
    if (canonical) $("room-url").value = canonical;
    showRoom(location, history, canonical ? { room: canonical } : {});
  },
  inviteLink(fields) {
    return inviteLink(location, fields);
  },
  left() {
    $("room-url").focus();
  },
};

function seatWish(fields) {
  // Where the page's address asks to sit: group=N (from 1) or friend=KEY.
  const group = Number(fields.group);
  if (fields.group !== null && Number.isSafeInteger(group) && group >= 1 && group <= MAX_LAYER + 1) return { layer: group - 1 };
  const friend = (fields.friend ?? "").toLowerCase();
  if (/^[0-9a-f]{64}$/.test(friend)) return { friend };
  return {};
}

export function typedAddress(text) {
  // The address box as a URL: what people type ("example.org/post") has no scheme, and
  // means the web page; one with a scheme is taken as it is (and refused if not http).
  const typed = text.trim();
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(typed) ? typed : `https://${typed}`;
}

function wirePage() {
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const url = typedAddress($("room-url").value);
    $("room-url").value = url;
    join(url);
  });
  window.addEventListener("hashchange", () => {
    // A room link opened in this tab: go there.
    const fields = parseFragment(location.hash);
    if (fields.room && fields.room !== ui.room?.url) join(fields.room, seatWish(fields));
  });
}

async function main() {
  let peer;
  try {
    // ?relay=only: every connection through the node's TURN relay (to try what a strict NAT sees)
    const config = params.get("relay") === "only" ? { relayOnly: true } : {};
    // ?device=LABEL: speak as a device of this identity, with a key of its own (protocol 5.3)
    peer = await Peer.open(nodes, { name: params.get("name"), config, device: params.get("device") });
  } catch (error) {
    banner(error.message);
    return;
  }
  startChat(peer, host);
  wirePage();
  const fields = parseFragment(location.hash);
  if (fields.room) {
    $("room-url").value = fields.room;
    await join(fields.room, seatWish(fields));
  }
  document.body.dataset.ready = "true";
}

ui.ready = main();
