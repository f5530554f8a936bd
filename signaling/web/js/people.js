// How the page names and draws a member: the name they gave themselves, told
// apart from a namesake by their key's tag ("Ana ·3fa9"), and an avatar of
// initials on a colour from the key. Names prove nothing beyond the key that
// signed them (docs/protocol.md 5.0.1, "Names that hold"); the tag and the
// colour are the messaging core's, the same in every client.

import { keyColour, keyHue, shortTag } from "./messaging.js";

export { keyColour, shortTag };

// Controls, format marks (bidi overrides, zero-width characters), lone surrogates and
// line and paragraph separators: what a name or a file name must not hide or reorder.
// A zero-width joiner between two Extended_Pictographic characters is kept (one emoji:
// 👩‍💻), also after the first one's U+FE0F or skin tone (❤️‍🔥, 👩🏽‍💻); anywhere else
// it is hidden. peer/chatscreen.py printable is the twin (tests/web/test_printable_twins.py).
const HIDDEN = /(?<=\p{Extended_Pictographic}[\u{FE0F}\u{1F3FB}-\u{1F3FF}]?)(\u200D)(?=\p{Extended_Pictographic})|[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu;

export function printable(text) {
  // `text` as the page shows a name or a file name a member gave: each hidden character
  // becomes U+FFFD, as peer/chatscreen.py printable writes them to a terminal. "Ana\u200b"
  // is then not "Ana", and "cat\u202egnp.exe" does not read as "catexe.png".
  return String(text).replace(HIDDEN, (_, joiner) => joiner ?? "\uFFFD");
}

export function namesake(name) {
  // Names that look alike share this: spaces around and between words do not tell apart
  // (of a printable name; peer/chatscreen.py looks).
  return name.trim().replace(/\s+/gu, " ");
}

export function labelsFor(names) {
  // Map key -> label, from Map key -> name (or null): a name two keys share (as shown,
  // spacing aside) gets each key's tag; a key with no name (or only spaces) is shown by
  // its tag alone ("member ·3fa9").
  const shown = new Map([...names].map(([key, name]) => [key, name ? printable(name) : ""]));
  const holders = new Map();
  for (const name of shown.values()) holders.set(namesake(name), (holders.get(namesake(name)) ?? 0) + 1);
  const labels = new Map();
  for (const [key, name] of shown) {
    if (!namesake(name)) labels.set(key, `member ${shortTag(key)}`);
    else labels.set(key, holders.get(namesake(name)) > 1 ? `${name} ${shortTag(key)}` : name);
  }
  return labels;
}

export function initials(name, key) {
  // One or two letters for an avatar: the first letters of the first two words, else
  // the key's first two hex digits.
  const words = (name ?? "").trim().split(/\s+/u).filter((w) => /[\p{L}\p{N}]/u.test(w));
  if (!words.length) return key.slice(0, 2).toUpperCase();
  const first = (word) => [...word.replace(/^[^\p{L}\p{N}]+/u, "")][0] ?? "";
  return (first(words[0]) + (words.length > 1 ? first(words.at(-1)) : "")).toUpperCase();
}

function hslToRgb(h, s, l) {
  const a = s * Math.min(l, 1 - l);
  const f = (n) => {
    const k = (n + h / 30) % 12;
    return l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
  };
  return [f(0), f(8), f(4)];
}

function luminance([r, g, b]) {
  // WCAG 2.x relative luminance of an sRGB colour (components 0..1).
  const lin = (c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

export function avatarInk(key) {
  // White or black initials, whichever stands out more on the key's colour
  // (hsl(H 65% 40%)): yellows and greens are too light for white text. The better
  // of the two is at least 4.58:1 on any hue (WCAG AA asks 4.5:1).
  const back = luminance(hslToRgb(keyHue(key), 0.65, 0.4));
  return 1.05 / (back + 0.05) >= (back + 0.05) / 0.05 ? "#ffffff" : "#000000";
}

export function readsOnWhite(colour) {
  // Whether text in `colour` (#rgb or #rrggbb) reads on white at WCAG AA's 4.5:1, and so
  // white text on it: a site's accent the widget can use for its links and buttons.
  const hex = colour.length === 4 ? [...colour.slice(1)].map((d) => d + d).join("") : colour.slice(1);
  const rgb = [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  return 1.05 / (luminance(rgb) + 0.05) >= 4.5;
}
