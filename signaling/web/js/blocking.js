// Block and mute in the page (docs/protocol.md 5.4): "Mute" and "Block" on each
// member's row, each asking to confirm in a dialog (of the person: every device that
// shows a delegation from its identity, 5.3); a "Blocked and muted" list in
// the people panel with "Unblock" / "Unmute"; and the note a flood cut leaves
// ("Muted X for flooding"). The rules live in peer.js (no link, no frames, not a
// member) and the messaging core (kept, never delivered); this only shows them.
// Every name reaches the DOM as text.

import { BLOCK, MAX_FLOOD_NOTES } from "./blocks.js";
import { $, el } from "./dom.js";
import { printable } from "./people.js";


function devices(count) {
  return count > 1 ? `all ${count} of their devices here and any they come back with` : "any other device of theirs";
}

const WHAT = {
  block: (name, count) => ({
    title: `Block ${name}${count > 1 ? ` (${count} devices)` : ""}?`,
    text: `You will not connect to ${name} (${devices(count)}), nor see their messages or files, here or in any room, until you unblock them. They are not told: to them you will look unreachable.`,
    ok: "Block",
  }),
  mute: (name, count) => ({
    title: `Mute ${name}${count > 1 ? ` (${count} devices)` : ""}?`,
    text: `Their messages (${devices(count)}) will be hidden, in every room, until you unmute them. You stay connected, and they are not told.`,
    ok: "Mute",
  }),
};

export function startBlocking(peer, host) {
  // `host`: {room() -> the Room we are in or null, who(key) -> a member's label,
  // note(text, extra, ...children) -> a line in the transcript, redraw(key) -> show
  // again the kept messages of `key`}.
  const dialog = el(
    "dialog",
    { id: "block-dialog", "aria-labelledby": "block-dialog-title", "aria-describedby": "block-dialog-text" },
    el(
      "form",
      { method: "dialog" },
      el("h2", { id: "block-dialog-title" }),
      el("p", { id: "block-dialog-text" }),
      el("button", { type: "submit", id: "block-ok", value: "ok" }),
      " ",
      el("button", { type: "button", id: "block-cancel" }, "Cancel"),
    ),
  );
  const panel = el(
    "details",
    { id: "blocked-panel" },
    el("summary", { id: "blocked-title" }, "Blocked and muted"),
    el("ul", { id: "blocked", "aria-labelledby": "blocked-title" }),
    el("p", { id: "blocked-note", className: "hint", role: "status", "aria-live": "polite" }),
  );
  ($("people") ?? document.body).append(panel); // the page, widget and panel all have #people
  document.body.append(dialog);
  $("block-cancel").addEventListener("click", () => dialog.close("cancel"));

  function keysOf(person) {
    // A person's keys we know: the key blocked or muted and the devices caught with it.
    return [person, ...peer.devicesBlockedWith(person)];
  }

  function hideMessages(keys, hidden) {
    // Taken out of the page (the core keeps them); drawn again from the transcript.
    for (const key of keys) {
      if (hidden) for (const li of document.querySelectorAll(`#messages li[data-author="${key}"]`)) li.remove();
      else host.redraw(key);
    }
  }

  function countLabel(count) {
    return count > 1 ? ` (${count} devices)` : count === 1 ? " (1 device)" : "";
  }

  function render() {
    const room = host.room();
    const entries = [...peer.blocks.values()].map((e) => [e.key, e.level, e.label]);
    for (const key of room?.floodMuted ?? []) if (!peer.blocks.has(key)) entries.push([key, "flooding", ""]);
    const list = $("blocked");
    list.replaceChildren(
      ...entries.map(([key, level, label]) => {
        const name = label ? `${printable(label)}·${key.slice(0, 4)}` : host.who(key);
        const devices = countLabel(peer.devicesBlockedWith(key).length).trim();
        const undo = level === BLOCK ? "Unblock" : "Unmute";
        const said = level === BLOCK ? "blocked" : level === "mute" ? "muted" : "muted for flooding";
        const button = el("button", { type: "button", className: "quiet", "aria-label": `${undo} ${name}${devices ? ` ${devices}` : ""}` }, undo);
        button.addEventListener("click", async () => {
          const keys = keysOf(key); // before the undo forgets its devices
          const done = level === BLOCK ? await peer.unblock(key) : await (room ?? peer).unmute(key);
          if (done) $("blocked-note").textContent = `${undo}ed ${name}.`;
          hideMessages(keys, false);
          render();
          refreshRows();
        });
        const count = devices ? el("span", { className: "hint devices" }, devices) : null;
        return el("li", { dataset: { key, level } }, el("span", { className: "name" }, name), " ", count, count && " ", el("span", { className: "hint" }, said), " ", button);
      }),
    );
    $("blocked-title").textContent = entries.length ? `Blocked and muted (${entries.length})` : "Blocked and muted";
    panel.hidden = false;
  }

  function confirm(kind, key) {
    const name = host.who(key);
    const room = host.room();
    const person = room?.personOf?.(key) ?? key;
    const count = person === key ? 1 : (room?.people?.().get(person)?.size ?? 1);
    const what = WHAT[kind](name, count);
    $("block-dialog-title").textContent = what.title;
    $("block-dialog-text").textContent = what.text;
    $("block-ok").textContent = what.ok;
    $("block-ok").classList.toggle("danger", kind === "block");
    dialog.returnValue = "";
    dialog.onclose = async () => {
      if (dialog.returnValue !== "ok") return;
      const room = host.room();
      if (kind === "block") await (room ?? peer).block(key);
      else await (room ?? peer).mute(key);
      hideMessages([key, ...keysOf(peer.personBlocked(key) ?? key)], true);
      $("blocked-note").textContent = `${kind === "block" ? "Blocked" : "Muted"} ${name}${count > 1 ? ` (${count} devices)` : ""}.`;
      render();
      refreshRows();
    };
    dialog.showModal();
    $("block-cancel").focus(); // the safe choice first
  }

  function decorate(li) {
    // "Mute" and "Block" on a member's row (not ours).
    const key = li.dataset.key;
    if (li.classList.contains("me") || key === peer.keyHex) return;
    let actions = li.querySelector(".block-actions");
    if (!actions) {
      actions = el("span", { className: "block-actions" });
      for (const kind of ["mute", "block"]) {
        const button = el("button", { type: "button", className: `quiet ${kind}-member`, dataset: { kind } }, kind === "mute" ? "Mute" : "Block");
        button.addEventListener("click", () => confirm(kind, key));
        actions.append(button);
      }
      li.append(actions);
    }
    const muted = peer.muted.has(key) || host.room()?.floodMuted.has(key);
    const mute = actions.querySelector(".mute-member");
    mute.hidden = Boolean(muted);
    mute.ariaLabel = `Mute ${host.who(key)}`;
    actions.querySelector(".block-member").ariaLabel = `Block ${host.who(key)}`;
  }

  function refreshRows() {
    for (const li of document.querySelectorAll("#members li[data-key]")) decorate(li);
  }

  function onFlooding(event) {
    // The core cut an author for flooding; the room mutes it until the page closes.
    if (event.room !== host.room()) return;
    const name = host.who(event.author);
    const shown = document.querySelector(`#messages li.note[data-flooding="${event.author}"]`);
    if (shown) {
      // reported again: how many more were dropped since
      const count = shown.querySelector(".dropped");
      count.textContent = String(Number(count.textContent) + event.dropped);
      return;
    }
    const block = el("button", { type: "button", className: "quiet", "aria-label": `Block ${name}` }, "Block");
    block.addEventListener("click", () => confirm("block", event.author));
    const text = el("span", {}, `Muted ${name} for flooding: they sent faster than the room takes; `, el("span", { className: "dropped" }, String(event.dropped)), " messages dropped. ");
    host.note("", { className: "note problem", dataset: { flooding: event.author } }, text, block);
    // A member forwarding floods of made-up authors adds one note each: the newest few stay.
    const notes = [...document.querySelectorAll("#messages li.note[data-flooding]")];
    for (const old of notes.slice(0, Math.max(0, notes.length - MAX_FLOOD_NOTES))) old.remove();
    hideMessages([event.author], true);
    render();
    refreshRows();
  }

  function onCaught(event) {
    // A device showed a delegation from a person blocked or muted: what it said here
    // before goes (the core keeps it for others), and the list counts it.
    hideMessages([event.key], true);
    render();
    refreshRows();
  }

  render();
  return { decorate, render, onFlooding, onCaught };
}
