// Where the page's own address keeps the room: in the fragment, which a browser
// never sends to anyone, so the node that serves the page does not learn which
// page one chats about (it only ever sees the room's hash).
//
//   /#room=https%3A%2F%2Fexample.org%2F&group=3      sit in group 3
//   /#room=https%3A%2F%2Fexample.org%2F&friend=KEY   sit beside a friend (an invite link)
//
// Old links carried these in the query (`/?room=...`); `moveQueryToFragment`
// rewrites such an address in place (history.replaceState) before the page
// connects anywhere. Parameters that configure the page itself (`name`, `node`,
// `relay`) stay in the query.

export const FRAGMENT_KEYS = ["room", "group", "friend"];

export function parseFragment(hash) {
  // {room, group, friend} (each a string or null) from "#room=...&group=...".
  // A room typed by hand may hold an unescaped "&": a piece that names none of
  // the keys belongs to the value before it.
  const found = Object.fromEntries(FRAGMENT_KEYS.map((key) => [key, null]));
  const text = hash.startsWith("#") ? hash.slice(1) : hash;
  let last = null;
  for (const piece of text.split("&")) {
    if (!piece) continue;
    const cut = piece.indexOf("=");
    const key = cut < 0 ? piece : piece.slice(0, cut);
    if (FRAGMENT_KEYS.includes(key)) {
      last = key;
      found[key] = decode(cut < 0 ? "" : piece.slice(cut + 1));
    } else if (last !== null) {
      found[last] += `&${decode(piece)}`;
    }
  }
  return found;
}

function decode(text) {
  try {
    return decodeURIComponent(text); // "+" is a plus: the fragment is no form
  } catch {
    return text; // a stray "%": take it as it is
  }
}

export function fragmentFor(fields) {
  // "#room=...&group=..." for the fields that are set, in FRAGMENT_KEYS order.
  const pieces = FRAGMENT_KEYS.filter((key) => fields[key] !== null && fields[key] !== undefined && fields[key] !== "").map(
    (key) => `${key}=${encodeURIComponent(String(fields[key]))}`,
  );
  return pieces.length ? `#${pieces.join("&")}` : "";
}

export function moveQueryToFragment(location, history) {
  // Move `?room=`, `?group=` and `?friend=` into the fragment (values already there
  // win); true if the address was rewritten. Must run before anything connects.
  const query = new URLSearchParams(location.search);
  if (!FRAGMENT_KEYS.some((key) => query.has(key))) return false;
  const fields = parseFragment(location.hash);
  for (const key of FRAGMENT_KEYS) {
    if (fields[key] === null && query.has(key)) fields[key] = query.get(key);
    query.delete(key);
  }
  const rest = query.toString();
  history.replaceState(history.state, "", `${location.pathname}${rest ? `?${rest}` : ""}${fragmentFor(fields)}`);
  return true;
}

export function showRoom(location, history, fields) {
  // Put the room (and only what is given) in the fragment, keeping the query.
  history.replaceState(history.state, "", `${location.pathname}${location.search}${fragmentFor(fields)}`);
}

export function inviteLink(location, fields) {
  // A link to this node's page that opens the room with `fields`: nothing in the query.
  return `${location.origin}${location.pathname}${fragmentFor(fields)}`;
}
