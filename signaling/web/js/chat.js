// The chat a person sees, whichever page holds it: join a page's room, chat,
// reply, react, share files, see who is here and how each connection goes
// (direct or through a relay), which group of the page one sits in and how many
// people the page has, move to another group or to a friend's. Everything here is
// presentation; the protocol lives in peer.js, what an envelope says in
// messaging.js.
//
// Two pages hold it: the page every node serves (app.js: the room comes from the
// address's fragment) and the browser extension's panel (extension/panel.js: the
// room follows the active tab). `startChat(peer, host)` wires the shared markup
// (the elements of index.html between its `chat` markers) to a Peer; the `host`
// says what only the holding page knows: where the room is shown besides the
// title (`showRoom`), what an invite link is (`inviteLink`), what to focus once
// the room is left (`left`). Groups are the protocol's layers counted from 1, as
// `pagemesh chat` shows them: group 1 is layer 0.
//
// Every text a member wrote reaches the DOM through textContent or text nodes
// (messagetext.js builds links with createElement), never as HTML.

import { Attention } from "./attention.js";
import { TranscriptFollower } from "./follow.js";
import { readContent, reactionsFor, refKey } from "./messaging.js";
import { messageText } from "./messagetext.js";
import { startBlocking } from "./blocking.js";
import { acceptRuleTakes } from "./files.js";
import { startContacts } from "./contacts.js";
import { parseIdentityFile } from "./identityfile.js";
import { MAX_LAYER, canonicalUrl } from "./peer.js";
import { avatarInk, initials, keyColour, labelsFor, printable } from "./people.js";
import { typingLine } from "./typing.js";
import { $, el, size } from "./dom.js";

const CENSUS_RETRY_MS = 1500; // a census refused for rate is asked again after this long
const MAX_TRANSCRIPT = 2000; // lines a room's transcript shows; the oldest go (their files' memory too)
const RENAME_MS = 200; // a profile frame's new name is shown within this long (one relabel for all)

const TITLE = "pagemesh";

// The reactions offered under every message (any emoji a member sends is shown).
export const REACTIONS = [
  ["👍", "thumbs up"],
  ["❤️", "heart"],
  ["😂", "laughing"],
  ["🎉", "party"],
  ["😮", "surprised"],
];
const EMOJI_NAMES = new Map(REACTIONS);

// connectedAt: per member, when its link first opened (ms since the page began loading)
// joinStartedAt: when the last join began (same clock)
const ui = {
  peer: null,
  room: null,
  files: new Map(),
  statusLog: [],
  connectedAt: {},
  joinStartedAt: null,
  seatNode: null,
  census: null,
  labels: null, // key -> how the page names that member (worked out again when null)
  relabelling: false, // a relabel is due once this burst of events is done
  folded: null, // reactionsFor(this room's history), until the next reaction
  replyTo: null, // {author, seq} the composer answers
  follower: null,
  attention: null,
  typingTimer: null, // clears the typing line when its last typist stops being shown
  host: null, // what the holding page does besides (startChat)
};
window.pagemesh = ui; // for people poking at the console, and for the tests

export { ui };

function short(key) {
  return key.slice(0, 8);
}

function who(key) {
  // Unnamed, we are what the others see ("member ·2b2d"); our row says "you" beside it.
  if (ui.peer && key === ui.peer.keyHex && ui.peer.name) return ui.peer.name;
  ui.labels ??= labels();
  const person = personOf(key);
  return ui.labels.get(key) ?? labelsFor(new Map([[person, null]])).get(person);
}

function personOf(key) {
  // The identity a device key speaks for (its delegation checked, protocol 5.3), else the key.
  return ui.room?.personOf?.(key) ?? key;
}

export function banner(text) {
  // An error stays until the next thing that works (a join, a send, a share, a connection).
  $("banner").textContent = text ?? "";
  $("banner").hidden = !text;
}

// --- names and faces ---

function knownName(key) {
  // The latest name `key` signed in this room's history, else its profile frame's.
  if (ui.peer && key === ui.peer.keyHex) return ui.peer.name || null;
  return ui.room?.core.nameOf(key) ?? ui.room?.names.get(key) ?? null;
}

function labels() {
  // How the page names everyone it knows a name for (a namesake gets the key's tag).
  const names = new Map();
  if (ui.peer?.name) names.set(ui.peer.keyHex, ui.peer.name);
  for (const [key, name] of ui.room?.names ?? []) names.set(key, name);
  for (const [key, name] of ui.room?.core.names() ?? []) names.set(key, name); // signed ones win
  // One person's devices (5.3) are one person: one label, told apart by the identity's tag.
  const persons = new Map();
  for (const [key, name] of names) {
    const person = personOf(key);
    if (name || !persons.has(person)) persons.set(person, name || persons.get(person) || null);
  }
  const byPerson = labelsFor(persons);
  return new Map([...names.keys()].map((key) => [key, byPerson.get(personOf(key))]));
}

function relabel() {
  // Name everyone on the page again (a name came or went, or now has a namesake).
  ui.labels = null;
  for (const span of document.querySelectorAll(".who[data-key]")) span.textContent = who(span.dataset.key);
  for (const face of document.querySelectorAll(".avatar[data-key]")) {
    face.textContent = initials(knownName(face.dataset.key), face.dataset.key);
    paintFace(face, face.dataset.key);
  }
  for (const span of document.querySelectorAll(".who[data-key]")) span.dataset.person = personOf(span.dataset.key);
  for (const li of document.querySelectorAll("#members li[data-key]")) {
    li.querySelector(".name").textContent = who(li.dataset.key);
    showDevice(li);
    ui.blocking?.decorate(li); // their labels name the member anew
    ui.contacts?.decorate(li); // "+ Contact"'s too
  }
  for (const button of document.querySelectorAll("#messages li.msg :is(button.reply, button.react)")) {
    const verb = button.classList.contains("reply") ? "Reply to" : "React to";
    button.setAttribute("aria-label", `${verb} ${who(button.closest("li").dataset.author)}`);
  }
}

function relabelSoon(delay = 0) {
  // Once per burst: a history frame's messages (or a member's renames) must not name
  // everyone again each.
  if (ui.relabelling) return;
  ui.relabelling = true;
  setTimeout(() => {
    ui.relabelling = false;
    relabel();
  }, delay);
}

function avatar(key) {
  const face = el("span", { className: "avatar", dataset: { key }, "aria-hidden": "true" }, initials(knownName(key), key));
  paintFace(face, key);
  return face;
}

function paintFace(face, key) {
  // A device's face wears its person's colour (5.3).
  const person = personOf(key);
  face.style.setProperty("background-color", keyColour(person));
  face.style.setProperty("color", avatarInk(person));
}

function showDevice(li) {
  // A member row says whose device it is: the device's label, and how many of that
  // person's devices are here (the delegation proves the person; the label proves nothing).
  const key = li.dataset.key;
  const person = personOf(key);
  li.dataset.person = person;
  const label = person === key ? null : ui.room?.deviceLabel?.(key);
  const count = ui.room?.people?.().get(person)?.size ?? 1;
  let badge = li.querySelector(".device");
  if (label === null || label === undefined) {
    badge?.remove();
    return;
  }
  if (!badge) {
    badge = el("span", { className: "device" });
    li.querySelector(".name").after(badge);
  }
  badge.dataset.devices = count;
  badge.textContent = `${printable(label) || "device"}${count > 1 ? ` · ${count} devices` : ""}`;
}

function whoSpan(key) {
  return el("span", { className: "who", dataset: { key, person: personOf(key) } }, who(key));
}

// --- the transcript, in the room's total order (lamport, author) ---

function place(li, lamport, author, { isNew = false, mine = false } = {}) {
  // Insert keeping (lamport, author) order; notes sort after messages of their lamport.
  li.dataset.lamport = lamport;
  li.dataset.order = author;
  const list = $("messages");
  let after = null;
  for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
    // from the end: what arrives is nearly always the newest
    if (+node.dataset.lamport < lamport || (+node.dataset.lamport === lamport && node.dataset.order <= author)) break;
    after = node;
  }
  list.insertBefore(li, after);
  while (list.childElementCount > MAX_TRANSCRIPT) forgetLine(list.firstElementChild);
  follows(li);
  if (after) follows(after);
  ui.follower.added({ isNew: isNew && !after, mine });
}

function forgetLine(li) {
  // The oldest line of a long session goes, and with a file's line the file's Blob (its
  // object URL kept it in memory): a room open for days, or a member offering a file a
  // second, grew the page without bound.
  li.remove();
  if (li.dataset.file === undefined) return;
  ui.files.delete(li.dataset.file);
  for (const node of li.querySelectorAll("a[href^='blob:'], img[src^='blob:']")) URL.revokeObjectURL(node.href || node.src);
}

function note(text, extra = {}, ...children) {
  const li = el("li", { className: "note", ...extra }, ...children, text);
  place(li, ui.room ? ui.room.core.lamport : 0, "~");
  return li;
}

function quote(ref) {
  // What a reply shows of the message it answers (which may be gone from history).
  const target = ui.room?.core.envelope(ref);
  const content = target ? readContent(target) : null;
  const box = el("blockquote", { className: "quote", dataset: { ref: refKey(ref) } });
  if (content?.type === "chat") box.append(el("span", { className: "who", dataset: { key: ref.author } }, who(ref.author)), " ", excerpt(content.text));
  else box.append(el("span", { className: "who", dataset: { key: ref.author } }, who(ref.author)), " ", el("em", {}, "a message this page no longer has"));
  return box;
}

function excerpt(text, max = 140) {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

function showMessage({ env, content, mine, replaces = null }, isNew) {
  content ??= readContent(env);
  // ours said again under a new seq (our key had said more elsewhere): it takes the old one's place
  if (replaces !== null) document.querySelector(`#messages li[data-id="${env.author}:${replaces}"]`)?.remove();
  if (content?.type === "reaction") {
    ui.folded = null;
    renderReactions(refKey(content.target));
    return;
  }
  if (content?.type !== "chat") return; // a kind this page does not read is not shown (5.0.1)
  const id = `${env.author}:${env.seq}`;
  if (document.querySelector(`#messages li[data-id="${id}"]`)) return;
  if (isNew && content.name) {
    // this message is named right away; the rest of the page soon, if a label changed
    const before = ui.labels?.get(env.author);
    ui.labels = null;
    if (who(env.author) !== before) relabelSoon();
  }
  const at = new Date(env.ts);
  const main = el(
    "div",
    { className: "msg-main" },
    el("div", { className: "msg-head" }, whoSpan(env.author), el("time", { className: "when", dateTime: at.toISOString() }, at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }))),
    content.replyTo ? quote(content.replyTo) : null,
    el("div", { className: "body" }, messageText(content.text)),
    el("div", { className: "reactions", role: "group", "aria-label": "Reactions", hidden: true }),
    el(
      "div",
      { className: "actions" },
      el("button", { type: "button", className: "reply", "aria-label": `Reply to ${who(env.author)}`, onclick: () => startReply(env) }, "Reply"),
      el("button", { type: "button", className: "react", "aria-label": `React to ${who(env.author)}`, "aria-expanded": "false", onclick: (event) => togglePicker(event.currentTarget, env) }, "React"),
    ),
  );
  const li = el("li", { className: mine ? "msg mine" : "msg", tabIndex: -1, dataset: { id, author: env.author, seq: env.seq } }, avatar(env.author), main);
  for (const img of li.querySelectorAll("img")) img.addEventListener("load", () => ui.follower.settle());
  li.dataset.ts = env.ts;
  place(li, env.lamport, env.author, { isNew, mine });
  renderReactions(id); // and its controls' place in the Tab order (roving)
  for (const box of document.querySelectorAll(`#messages .quote[data-ref="${id}"]`)) box.replaceWith(quote({ author: env.author, seq: env.seq }));
  if (isNew && !mine && dmShown()) ui.peer.dms.roomNews(); // counted on "Back to the room"
  if (isNew && !mine) {
    $("announce").textContent = `${who(env.author)}: ${excerpt(content.text, 300)}`;
    ui.attention.arrived({ from: who(env.author), text: content.text, tag: ui.room?.key });
  }
}

const RUN_MS = 5 * 60 * 1000; // messages of one author this close together read as one run

// The transcript is one stop of the Tab order: arrow keys move between its messages, and
// only the message reached has its links and buttons (Reply, React, reactions) in the
// Tab order. With every message's own in it, the message box was dozens of Tabs away.
const IN_MESSAGE = "a[href], button";

function roving(li) {
  const active = li === ui.activeMessage;
  for (const control of li.querySelectorAll(IN_MESSAGE)) control.tabIndex = active ? 0 : -1;
}

function wireTranscript() {
  const list = $("messages");
  list.addEventListener("focusin", (event) => {
    const li = event.target.closest("#messages > li.msg");
    if (!li || li === ui.activeMessage) return;
    const before = ui.activeMessage;
    ui.activeMessage = li;
    if (before?.isConnected) roving(before);
    roving(li);
  });
  list.addEventListener("keydown", (event) => {
    const step = { ArrowUp: -1, ArrowDown: 1, Home: -Infinity, End: Infinity }[event.key];
    if (step === undefined || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.target.closest(".picker, input, textarea")) return; // the picker has its own keys
    const rows = [...list.querySelectorAll(":scope > li.msg")];
    if (!rows.length) return;
    const at = rows.indexOf(event.target.closest("#messages > li.msg"));
    const from = at < 0 ? rows.length : at; // from the list itself, Up is the newest message
    event.preventDefault();
    rows[Math.max(0, Math.min(rows.length - 1, from + step))].focus();
  });
}

function follows(li) {
  // A message right after its author's previous one (within RUN_MS) drops its face and
  // name from view (a screen reader still reads the name).
  const before = li.previousElementSibling;
  const run =
    li.classList.contains("msg") &&
    before?.classList.contains("msg") &&
    before.dataset.author === li.dataset.author &&
    Math.abs(li.dataset.ts - before.dataset.ts) < RUN_MS;
  li.classList.toggle("continued", Boolean(run));
}

// --- replies and reactions ---

function startReply(env) {
  const content = readContent(env);
  ui.replyTo = { author: env.author, seq: env.seq };
  $("reply-who").textContent = who(env.author);
  $("reply-quote").textContent = excerpt(content?.text ?? "", 80);
  $("reply-bar").hidden = false;
  $("text").focus();
}

function endReply() {
  ui.replyTo = null;
  $("reply-bar").hidden = true;
}

function reactionsOf(id) {
  // Map emoji -> Set of keys reacting with it to message `id`: a fold over history,
  // done again only after a reaction arrives.
  if (ui.folded === null) {
    const envs = ui.room ? ui.room.transcript().filter((e) => e.kind === "reaction") : [];
    ui.folded = reactionsFor(envs);
  }
  return ui.folded.get(id) ?? new Map();
}

function renderReactions(id) {
  const li = document.querySelector(`#messages li.msg[data-id="${id}"]`);
  if (!li) return; // not shown (yet): its own rendering asks again
  const box = li.querySelector(".reactions");
  const [author, seq] = [li.dataset.author, Number(li.dataset.seq)];
  const chips = [...reactionsOf(id)].map(([emoji, keys]) => {
    const mine = keys.has(ui.peer.keyHex);
    const names = [...keys].map((key) => (key === ui.peer.keyHex ? "you" : who(key))).join(", ");
    const label = `${EMOJI_NAMES.get(emoji) ?? emoji}: ${keys.size} (${names})`;
    return el(
      "button",
      { type: "button", className: "reaction", title: names, "aria-pressed": String(mine), "aria-label": label, dataset: { emoji }, onclick: () => react({ author, seq }, emoji, !mine) },
      `${emoji} ${keys.size}`,
    );
  });
  const focused = box.contains(document.activeElement) ? document.activeElement.dataset.emoji : null;
  box.replaceChildren(...chips);
  box.hidden = !chips.length;
  roving(li);
  if (focused) box.querySelector(`button[data-emoji="${focused}"]`)?.focus();
  ui.follower.settle();
}

async function react(target, emoji, on) {
  try {
    await ui.room.react(target, emoji, on);
    banner(null);
  } catch (error) {
    banner(`could not react: ${error.message}`);
  }
}

function closePicker(restoreFocus = false) {
  const picker = document.querySelector("#messages .picker");
  if (!picker) return;
  const opener = picker.previousElementSibling;
  picker.remove();
  opener?.setAttribute("aria-expanded", "false");
  if (restoreFocus) opener?.focus();
}

function togglePicker(button, env) {
  // A small row of emoji buttons after the React button; Escape closes it.
  const open = button.getAttribute("aria-expanded") === "true";
  closePicker();
  if (open) return;
  const target = { author: env.author, seq: env.seq };
  const chosen = reactionsOf(`${env.author}:${env.seq}`);
  const buttons = REACTIONS.map(([emoji, name]) => {
    const mine = chosen.get(emoji)?.has(ui.peer.keyHex) ?? false;
    return el(
      "button",
      {
        type: "button",
        className: "emoji",
        "aria-label": mine ? `Take back ${name}` : `React with ${name}`,
        "aria-pressed": String(mine),
        onclick: () => {
          closePicker(true);
          react(target, emoji, !mine);
        },
      },
      emoji,
    );
  });
  const picker = el("div", { className: "picker", role: "group", "aria-label": "Pick a reaction" }, ...buttons);
  picker.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closePicker(true);
  });
  button.after(picker);
  button.setAttribute("aria-expanded", "true");
  buttons[0].focus();
  ui.follower.settle();
}

// --- members ---

function memberRow(key) {
  let li = document.querySelector(`#members li[data-key="${key}"]`);
  if (!li) {
    li = el(
      "li",
      { dataset: { key } },
      avatar(key),
      el("span", { className: "name" }),
      el("span", { className: "path", dataset: { path: "connecting" } }, "connecting"),
    );
    $("members").append(li);
  }
  li.querySelector(".name").textContent = who(key);
  showDevice(li);
  ui.blocking?.decorate(li); // Mute, Block (blocking.js, docs/protocol.md 5.4)
  ui.contacts?.decorate(li); // "+ Contact" (contacts.js)
  return li;
}

function setPath(key, path) {
  const badge = memberRow(key).querySelector(".path");
  badge.dataset.path = path ?? "connecting";
  badge.textContent = path ?? "connecting";
}

function renderTotal() {
  const count = ui.room ? ui.room.members.size + 1 : 0;
  $("total").textContent = ui.room ? `(${count})` : "";
  $("people-toggle").textContent = ui.room ? `People (${count})` : "People";
}

// --- groups: where we sit on a busy page (group N is layer N - 1) ---

// The page speaks English, and writes its numbers as English does (9,800). Not
// toLocaleString: its first call loads the locale's data, 20 to 100 ms of main thread
// just when `joined` is shown and the first connection waits for that thread.
const number = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
const people = (n) => `${number(n)} ${n === 1 ? "person" : "people"}`;

function seatText({ layer, layers, total }) {
  // "You are in group 7 of 412 · about 9,800 people on this page" (estimates).
  const group = layer + 1;
  const about = total === null ? "" : ` · about ${people(total)} on this page`;
  return `You are in group ${number(group)} of ${number(Math.max(layers ?? group, group))}${about}`;
}

function renderSeat() {
  const room = ui.room;
  $("seat").hidden = !room || room.layer === null;
  if ($("seat").hidden) return;
  $("group").textContent = seatText(room);
  $("group").dataset.layer = room.layer;
  $("my-key").textContent = ui.peer.keyHex;
}

function groupsNote(text, kind = "info") {
  // What the groups panel has to say: progress, a copied key, or a refusal ("problem").
  $("groups-note").textContent = text;
  $("groups-note").dataset.kind = kind;
  $("groups-note").hidden = !text;
}

function renderGroups(picture) {
  const rows = [...picture.counts]
    .sort((a, b) => a.layer - b.layer)
    .map(({ layer, count }) => {
      const mine = layer === ui.room.layer;
      const group = `group ${number(layer + 1)}`;
      const action = mine
        ? el("span", { className: "here" }, "you are here")
        : el(
            "button",
            { type: "button", className: "move", "aria-label": `Move to ${group} (${people(count)})`, onclick: () => moveTo(layer) },
            "Move here",
          );
      return el(
        "li",
        { className: mine ? "mine" : "", dataset: { layer } },
        el("span", { className: "group-name" }, `Group ${number(layer + 1)}`),
        el("span", { className: "group-count" }, people(count)),
        action,
      );
    });
  const focused = $("group-list").contains(document.activeElement);
  $("group-list").replaceChildren(...rows);
  if (focused) $("groups").querySelector("summary").focus(); // its button is gone: stay in the panel
}

async function refreshGroups(retry = true) {
  // Ask the node for a fresh picture: the sentence and the list follow it.
  const room = ui.room;
  if (!room) return;
  $("group-list").setAttribute("aria-busy", "true");
  try {
    const picture = await room.census();
    if (room !== ui.room) return;
    ui.census = picture;
    renderSeat();
    renderGroups(picture);
  } catch (error) {
    if (error.code === "rate-limited" && retry) {
      // A quick run of moves spent the node's budget for lookups (docs/protocol.md 3.5):
      // ask once more a little later rather than put this over what the move said.
      setTimeout(() => refreshGroups(false), CENSUS_RETRY_MS);
      return;
    }
    groupsNote(`Could not list the groups: ${error.message}`, "problem");
  } finally {
    $("group-list").removeAttribute("aria-busy");
  }
}

function refusal(error, where) {
  if (error.code === "layer-full") return `${where} is full`;
  if (error.code === "unknown-peer") return "Nobody with that key is on this page";
  return `Could not move: ${error.message}`;
}

async function move(how, where) {
  // A move to another group (`how(room)`), shown while the node answers.
  const room = ui.room;
  if (!room) return;
  const buttons = [...document.querySelectorAll("#groups button")];
  for (const button of buttons) button.disabled = true;
  groupsNote(`Moving to ${where}…`);
  try {
    await how(room);
    groupsNote("");
  } catch (error) {
    groupsNote(refusal(error, where.charAt(0).toUpperCase() + where.slice(1)), "problem");
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

function moveTo(layer) {
  return move((room) => room.move(layer), `group ${number(layer + 1)}`);
}

function sitWith(key) {
  return move((room) => room.sitWith(key), "your friend's group");
}

// --- files ---

function fileRow(id, name, bytes, text) {
  let li = ui.files.get(id);
  if (!li) {
    li = note("", { dataset: { file: id } });
    li.classList.add("file");
    ui.files.set(id, li);
  }
  li.replaceChildren(el("span", {}, `${text} ${name} (${size(bytes)}) `));
  return li;
}

function image(url, name) {
  const img = el("img", { src: url, alt: name });
  img.addEventListener("load", () => ui.follower.settle());
  return img;
}

function onFileEvent(event) {
  const room = ui.room;
  if (event.type === "file-offered") {
    const { sender, earlier } = event;
    const offer = { ...event.offer, name: printable(event.offer.name) }; // as shown: nothing hidden (people.js)
    const li = fileRow(offer.id, offer.name, offer.size, `${who(sender)} ${earlier ? "shared earlier" : "offers"}`);
    if (!acceptRuleTakes(ui.peer.config.autoAccept, offer, earlier)) {
      li.append(
        el("button", { type: "button", className: "accept", "aria-label": `Accept ${offer.name}`, onclick: () => room.acceptFile(offer.id) }, "Accept"),
        el("button", { type: "button", className: "decline", "aria-label": `Decline ${offer.name}`, onclick: () => room.declineFile(offer.id) }, "Decline"),
      );
    }
  } else if (event.type === "file-progress") {
    const li = ui.files.get(event.id);
    if (!li) return;
    let bar = li.querySelector("progress");
    if (!bar) li.append((bar = el("progress", { max: event.size, "aria-label": "transferred" })));
    bar.value = event.done;
  } else if (event.type === "file-done" && event.blob) {
    const { sender, blob, id } = event;
    const offer = { ...event.offer, name: printable(event.offer.name) };
    const url = URL.createObjectURL(blob);
    const li = fileRow(id, offer.name, offer.size, `${who(sender)} shared`);
    const link = el(
      "a",
      { href: url, download: offer.name, className: "download", "aria-label": `download ${offer.name}`, dataset: { sha256: offer.sha256, name: offer.name } },
      "download",
    );
    li.append(link);
    if (blob.type.startsWith("image/")) li.append(image(url, offer.name)); // typed so if it may be shown (files.js)
    ui.follower.settle();
  } else if (event.type === "file-done") {
    const li = ui.files.get(event.id);
    li?.append(el("span", { className: "delivered", dataset: { to: event.sender } }, ` ✓ ${who(event.sender)}`));
  } else if (event.type === "file-failed") {
    const li = ui.files.get(event.id) ?? note("");
    li.append(el("span", { className: "failed" }, ` failed: ${event.reason}`));
  }
}

// --- events from the peer ---

function onEvent(event) {
  if (event.room?.contact) return; // a DM room's: the conversation (dm.js) shows it, not the page's room
  switch (event.type) {
    case "status":
      ui.statusLog.push(`${event.state} ${event.message ?? event.node ?? ""}`);
      $("status").textContent = event.state === "connected" ? `connected to ${event.node}` : `${event.state}: ${event.message ?? event.node ?? ""}`;
      $("status").dataset.state = event.state;
      if (event.state === "connected") banner(null);
      else if (["lost", "retrying", "replaced", "too-old"].includes(event.state)) banner(event.message);
      break;
    case "message":
      if (event.room === ui.room) showMessage(event, true);
      break;
    case "member-joined":
      // Those a join of ours finds there are drawn once it is answered (join()), after
      // the page heard of its first link: no "joined" note for them.
      if (event.room !== ui.room) break;
      memberRow(event.key);
      note("joined", {}, whoSpan(event.key));
      renderTotal();
      relabel();
      break;
    case "member-left":
      document.querySelector(`#members li[data-key="${event.key}"]`)?.remove();
      note("left", { dataset: { left: event.key } }, whoSpan(event.key));
      renderTotal();
      break;
    case "connected":
      ui.connectedAt[event.key] ??= performance.now();
      setPath(event.key, event.path);
      break;
    case "unreachable":
      setPath(event.key, "unreachable");
      note(event.message, { className: "note problem", dataset: { unreachable: event.key } });
      break;
    case "path":
      ui.statusLog.push(`path ${event.key.slice(0, 8)} ${event.path}`);
      setPath(event.key, event.path);
      break;
    case "disconnected":
      setPath(event.key, null);
      break;
    case "profile":
      // What is drawn from now on names it anew; what is drawn already, within RENAME_MS:
      // a member renaming itself over and over names everyone again that often at most.
      ui.labels = null;
      relabelSoon(RENAME_MS); // (one may come before the join sets ui.room)
      break;
    case "device":
    case "revoked":
      if (event.room === ui.room) relabel(); // one person now (or again two): names, faces, badges
      break;
    case "typing":
      if (event.room === ui.room) renderTyping();
      break;
    case "flooding":
      ui.blocking?.onFlooding(event);
      break;
    case "caught": // a device of a person blocked or muted (blocking.js, protocol 5.4)
      ui.blocking?.onCaught(event);
      break;
    case "gap":
      note(`${event.last - event.first + 1} messages of ${who(event.author)} could not be recovered`);
      break;
    case "rejoined":
      if (event.room === ui.room && event.node !== ui.seatNode) note(`moved to node ${event.node}`);
      if (event.room === ui.room) ui.seatNode = event.node;
      break;
    case "moved":
      if (event.room === ui.room) note(`you moved to group ${number(event.layer + 1)}`, { className: "note moved" });
      break;
    case "seated":
      if (event.room !== ui.room) break;
      renderSeat();
      if ($("groups").open) refreshGroups();
      break;
    case "problem":
    case "node-error":
      console.warn("pagemesh:", event.message);
      if (event.type === "problem") $("status").textContent = event.message;
      break;
    default:
      if (event.type.startsWith("file-")) onFileEvent(event);
  }
}

// --- the page's controls ---

function inRoom(on) {
  $("leave").hidden = !on;
  $("empty-hint").hidden = on;
  $("people-toggle").hidden = !on;
  composerFor();
  ui.contacts?.render(); // who is "here" changes with the room
}

function dmShown() {
  // The direct conversation the main pane shows instead of the room (dm.js), or null.
  return ui.peer?.dms?.view ?? null;
}

function composerFor() {
  // The big composer writes to what the main pane shows: the conversation with a
  // contact while one is open, else the room (none: it waits for one).
  const dm = dmShown();
  const on = Boolean(dm || ui.room);
  // the transcript was out of view (no scroll position kept): back at its newest
  if (!dm && ui.paneWasDm) ui.follower?.jump();
  ui.paneWasDm = Boolean(dm);
  ui.peer?.dms?.backLabel(); // "Back to the room", or "Close" with no room
  for (const id of ["text", "file", "send", "file-button"]) $(id).disabled = !on;
  $("text").placeholder = dm ? `Message ${dm.petname}` : ui.room ? "Say something" : "Join a room to chat";
  const label = document.querySelector('label[for="text"]');
  if (label) label.textContent = dm ? `Message to ${dm.petname}` : "Message";
  $("file-button").setAttribute("aria-label", dm ? `Share a file with ${dm.petname}` : "Share a file or an image");
}

function clearRoom() {
  $("members").replaceChildren();
  $("messages").replaceChildren();
  ui.files.clear();
  ui.folded = null;
  ui.labels = null;
  endReply();
  ui.follower.reset();
  ui.attention.seen();
  clearTimeout(ui.typingTimer);
  $("typing").textContent = "";
}

export async function join(pageUrl, wish = {}) {
  let canonical;
  try {
    canonical = canonicalUrl(pageUrl);
  } catch (error) {
    banner(error.message);
    return;
  }
  if (dmShown()) ui.peer.dms.hide(); // joining a room shows the room
  if (ui.room) {
    await ui.peer.leave(ui.room);
    clearRoom();
  }
  ui.room = null;
  inRoom(false);
  renderSeat();
  $("room-title").textContent = `Joining ${canonical}…`;
  ui.joinStartedAt = performance.now();
  try {
    try {
      ui.room = await ui.peer.join(canonical, wish);
    } catch (error) {
      if (!["layer-full", "unknown-peer"].includes(error.code)) throw error;
      // the group asked for has no seat, or the friend is not here: sit anywhere
      banner(wish.friend ? `${refusal(error, "your friend's group")}; you sit in another group` : `${refusal(error, `group ${wish.layer + 1}`)}; you sit in another group`);
      ui.room = await ui.peer.join(canonical);
      wish = null; // the banner stays: it says what happened
    }
  } catch (error) {
    banner(`could not join: ${error.message}`);
    $("room-title").textContent = "No room yet";
    return;
  }
  if (wish !== null) banner(null);
  ui.seatNode = ui.peer.node?.nodeUrl ?? null;
  $("room-title").textContent = canonical;
  ui.host.showRoom(canonical);
  inRoom(true);
  memberRow(ui.peer.keyHex).classList.add("me");
  setPath(ui.peer.keyHex, "you");
  for (const env of ui.room.transcript()) {
    const mine = env.author === ui.peer.keyHex;
    if (mine || ui.room.shows(env.author)) showMessage({ env, mine }, false); // none muted (5.4)
  }
  for (const key of ui.room.members) memberRow(key);
  relabel();
  renderTotal();
  renderSeat();
  ui.follower.reset();
  ui.follower.toBottom();
  if ($("groups").open) refreshGroups();
  focusComposer();
}

function focusComposer() {
  // The message box takes the focus when a room opens, unless the person is typing
  // somewhere else meanwhile (their name, say): a room that opens under their fingers
  // would take the rest of their keystrokes, and Enter would post them. The address
  // box they joined from gives it up.
  const active = document.activeElement;
  const elsewhere = active instanceof HTMLElement && active !== document.body && active.id !== "room-url";
  if (elsewhere && active.matches("input, textarea, select, [contenteditable]")) return;
  $("text").focus();
}

export async function leave() {
  // Leave the room and go back to the start: the holding page shows no room.
  const room = ui.room;
  if (!room) return;
  ui.room = null;
  await ui.peer.leave(room);
  clearRoom();
  inRoom(false);
  renderSeat();
  renderTotal();
  $("room-title").textContent = "No room yet";
  ui.host.showRoom(null);
  ui.host.left();
}

async function sendFiles(files) {
  if (dmShown()) return ui.peer.dms.shareShown(files); // to the contact whose conversation is shown
  for (const file of files) {
    try {
      const offer = await ui.room.sendFile(file);
      const li = fileRow(offer.id, offer.name, offer.size, "you shared");
      if (offer.mime.startsWith("image/")) li.append(image(URL.createObjectURL(file), offer.name));
      banner(null);
    } catch (error) {
      note(`could not share ${file.name}: ${error.message}`);
    }
  }
}

async function send() {
  const text = $("text").value;
  if (dmShown() && text.trim()) {
    $("text").value = "";
    fitComposer();
    if (!(await ui.peer.dms.sendText(text))) {
      $("text").value = text;
      fitComposer();
    }
    return;
  }
  if (!text.trim() || !ui.room) return;
  const replyTo = ui.replyTo;
  $("text").value = "";
  fitComposer();
  endReply();
  try {
    // a `chat` envelope: our signed name travels with every message (docs/protocol.md 5.0.1)
    await ui.room.sendChat(text, { replyTo });
    banner(null);
  } catch (error) {
    banner(error.message);
    $("text").value = text;
    fitComposer();
  }
}

function renderTyping() {
  // "Ana is typing…" under the messages, until the last typist stops being shown.
  clearTimeout(ui.typingTimer);
  const at = Date.now() / 1000;
  const typing = ui.room?.typing;
  $("typing").textContent = typing ? typingLine(typing.typists(at).map(who)) : "";
  const next = typing?.nextChange(at) ?? null;
  if (next !== null) ui.typingTimer = setTimeout(renderTyping, Math.max(0, next - at) * 1000 + 50);
}

function fitComposer() {
  // The box grows with its text, up to about eight lines, then scrolls.
  const box = $("text");
  box.style.setProperty("height", "auto");
  box.style.setProperty("height", `${Math.min(box.scrollHeight + 2, 180)}px`);
}

async function copy(text, done) {
  try {
    await navigator.clipboard.writeText(text);
    groupsNote(done);
  } catch {
    groupsNote(`Copy this: ${text}`);
  }
}

function wireComposer() {
  $("compose").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("compose").requestSubmit();
    } else if (event.key === "Escape" && ui.replyTo) {
      endReply();
    }
  });
  $("text").addEventListener("input", () => {
    fitComposer();
    if (ui.room && !dmShown() && $("text").value.trim()) ui.room.typed(); // the room never hears of a DM being written
  });
  $("reply-cancel").addEventListener("click", () => {
    endReply();
    $("text").focus();
  });
  $("file-button").addEventListener("click", () => $("file").click());
  // Enter clicks a button on key down, where Chromium opens no file chooser: open it on key up.
  $("file-button").addEventListener("keydown", (event) => {
    if (event.key === "Enter") event.preventDefault();
  });
  $("file-button").addEventListener("keyup", (event) => {
    if (event.key === "Enter") $("file").click();
  });
  $("file").addEventListener("change", () => {
    sendFiles([...$("file").files]);
    $("file").value = "";
  });
  const chat = $("chat");
  chat.addEventListener("dragover", (event) => event.preventDefault());
  chat.addEventListener("drop", (event) => {
    event.preventDefault();
    if (ui.room || dmShown()) sendFiles([...event.dataTransfer.files]);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files ?? [])];
    if ((ui.room || dmShown()) && files.length) sendFiles(files);
  });
}

function wireGroups() {
  $("groups").addEventListener("toggle", () => {
    if ($("groups").open) refreshGroups();
  });
  $("groups-refresh").addEventListener("click", () => refreshGroups());
  $("move-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const group = Number($("move-group").value);
    if (!Number.isSafeInteger(group) || group < 1 || group > MAX_LAYER + 1) {
      groupsNote(`Groups are numbered 1 to ${number(MAX_LAYER + 1)}`, "problem");
      return;
    }
    moveTo(group - 1);
  });
  $("friend-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("friend-key").value.trim().toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(key)) {
      groupsNote("A key is 64 hex digits: ask your friend to copy theirs from this panel", "problem");
      return;
    }
    sitWith(key);
  });
  $("copy-key").addEventListener("click", () => copy(ui.peer.keyHex, "Your key is copied"));
  $("copy-invite").addEventListener("click", () => {
    copy(ui.host.inviteLink({ room: ui.room.url, friend: ui.peer.keyHex }), "An invite link to your group is copied");
  });
}

// --- identity files (docs/identity.md) ---

function askPassphrase({ title, text, confirm, run }) {
  // The identity dialog: one passphrase (twice when `confirm`), then `run(passphrase)`;
  // an error from it is shown in the dialog, which stays open to try again.
  const dialog = $("identity-dialog");
  $("identity-dialog-title").textContent = title;
  $("identity-dialog-text").textContent = text;
  $("identity-passphrase").value = "";
  $("identity-passphrase-again").value = "";
  const username = $("identity-username");
  if (username) username.value = ui.peer.identityHex ?? ui.peer.keyHex; // the identity the file holds
  $("identity-confirm-row").hidden = !confirm;
  $("identity-error").textContent = "";
  $("identity-form").onsubmit = async (event) => {
    event.preventDefault();
    const passphrase = $("identity-passphrase").value;
    if (confirm && passphrase !== $("identity-passphrase-again").value) {
      $("identity-error").textContent = "The two passphrases differ.";
      return;
    }
    $("identity-ok").disabled = true;
    $("identity-error").textContent = "Working…";
    try {
      await run(passphrase);
      dialog.close();
    } catch (error) {
      $("identity-error").textContent = error.message;
    } finally {
      $("identity-ok").disabled = false;
    }
  };
  $("identity-cancel").onclick = () => dialog.close();
  dialog.showModal();
  $("identity-passphrase").focus();
}

function exportIdentity() {
  askPassphrase({
    title: "Export identity",
    text: "Choose a passphrase of several random words; the file is as strong as it is.",
    confirm: true,
    run: async (passphrase) => {
      const text = await ui.peer.exportIdentity(passphrase);
      const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
      const link = el("a", { href: url, download: `${ui.peer.name || "pagemesh"}.pagemesh-identity` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      $("identity-note").textContent = "Identity exported.";
      setTimeout(() => {
        if ($("identity-note").textContent === "Identity exported.") $("identity-note").textContent = "";
      }, 8000);
    },
  });
}

async function importIdentityFile(file) {
  const text = await file.text();
  let publicKey;
  try {
    publicKey = parseIdentityFile(text).publicKey;
  } catch (error) {
    $("identity-note").textContent = `Cannot import ${file.name}: ${error.message}`;
    return;
  }
  askPassphrase({
    title: "Import identity",
    text: `${file.name} holds the key ${publicKey}. Importing replaces this browser's key (${ui.peer.keyHex}) and its rooms' state; export it first if you may want it back.`,
    confirm: false,
    run: async (passphrase) => {
      await ui.peer.importIdentity(text, passphrase);
      location.reload();
    },
  });
}

function wireIdentity() {
  if (!ui.peer.exportable) {
    $("export-identity").disabled = true;
    $("identity-note").textContent =
      "This key was made before keys could be exported and cannot leave this browser; importing one replaces it.";
  }
  $("export-identity").addEventListener("click", exportIdentity);
  $("import-identity").addEventListener("click", () => $("import-identity-file").click());
  $("import-identity-file").addEventListener("change", async () => {
    const [file] = $("import-identity-file").files;
    $("import-identity-file").value = "";
    if (file) await importIdentityFile(file);
  });
}

function wireFolds() {
  // The header's folds (room switch, "⋯"): Escape closes an open one, back to its summary.
  for (const fold of document.querySelectorAll("header details.fold")) {
    fold.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || !fold.open) return;
      event.preventDefault();
      fold.open = false;
      fold.querySelector("summary").focus();
    });
  }
  $("room-switch")?.addEventListener("toggle", () => {
    if ($("room-switch").open) $("room-url").focus();
  });
}

function wireChat() {
  wireTranscript();
  $("leave").addEventListener("click", () => leave());
  const showPeople = (open) => {
    $("people-toggle").setAttribute("aria-expanded", String(open));
    document.body.classList.toggle("people-open", open);
  };
  $("people-toggle").addEventListener("click", () => showPeople($("people-toggle").getAttribute("aria-expanded") !== "true"));
  $("people").addEventListener("keydown", (event) => {
    // Escape in the opened People panel (a phone) closes it, back to its button, as the
    // header's folds do; a dialog or a select open in it takes its Escape first.
    if (event.key !== "Escape" || !document.body.classList.contains("people-open") || event.defaultPrevented) return;
    if (event.target.closest("dialog, select")) return;
    event.preventDefault();
    showPeople(false);
    $("people-toggle").focus();
  });
  $("name").addEventListener("change", async () => {
    await ui.peer.setName($("name").value.trim());
    relabel();
  });
}

export function startChat(peer, host) {
  // Show `peer`'s rooms in this page's chat markup and start it connecting.
  // `host`: {showRoom(canonical or null), inviteLink({room, friend}), left()}.
  ui.host = host;
  ui.follower = new TranscriptFollower($("messages"), $("new-pill"));
  ui.attention = new Attention(document, { title: TITLE, checkbox: $("notify"), note: $("notify-note") });
  ui.peer = peer;
  peer.on(onEvent);
  $("key").textContent = short(peer.keyHex);
  if (!$("name").value) $("name").value = peer.name; // a name typed while the page opened stays (saved on change)
  wireChat();
  wireFolds();
  wireIdentity();
  wireComposer();
  wireGroups();
  ui.blocking = startBlocking(peer, {
    room: () => ui.room,
    who,
    note,
    redraw: (key) => {
      for (const env of ui.room?.transcript() ?? []) if (env.author === key) showMessage({ env, mine: false }, false);
    },
  });
  ui.contacts = startContacts(peer, { room: () => ui.room, who, personOf, join, move: (layer) => moveTo(layer), paneChanged: composerFor });
  peer.start();
}
