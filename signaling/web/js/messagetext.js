// A message's text as DOM nodes: text nodes, and links for what looks like an
// http(s) address. Built with createElement and textContent only, never from
// HTML, so nothing a member writes can become markup. A link opens in a new
// tab and tells the page it leads to nothing about us (noopener noreferrer).

// A run of non-space characters starting with http:// or https://; trailing
// punctuation that usually ends a sentence is left out of the link.
const CANDIDATE = /\bhttps?:\/\/[^\s<>"]+/giu;
const TRAILING = /[.,;:!?'")\]}>]+$/u;

export function linkTarget(text) {
  // The href for `text` if it is an http(s) URL the browser parses, else null.
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  if (!url.hostname) return null;
  return url.href;
}

export function splitLinks(text) {
  // [{text}, {text, href}, ...] covering `text` in order.
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(CANDIDATE)) {
    let candidate = match[0];
    const trailing = candidate.match(TRAILING);
    if (trailing) {
      // keep a closing bracket that has its opening one inside the link: (see https://x.org/a_(b))
      candidate = candidate.slice(0, candidate.length - trailing[0].length);
      if (trailing[0].startsWith(")") && candidate.includes("(")) candidate += ")";
    }
    const href = linkTarget(candidate);
    if (!href) continue;
    if (match.index > at) parts.push({ text: text.slice(at, match.index) });
    parts.push({ text: candidate, href });
    at = match.index + candidate.length;
  }
  if (at < text.length) parts.push({ text: text.slice(at) });
  return parts;
}

export function messageText(text, doc = document) {
  // A DocumentFragment of text nodes and <a> elements for `text`.
  const fragment = doc.createDocumentFragment();
  for (const part of splitLinks(text)) {
    if (!part.href) {
      fragment.append(doc.createTextNode(part.text));
      continue;
    }
    const a = doc.createElement("a");
    a.href = part.href;
    a.textContent = part.text;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    fragment.append(a);
  }
  return fragment;
}
