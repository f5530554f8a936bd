// Where the extension joins a page's room, and where it never does (docs/extension.md).
// Pure: a tab's URL and the person's settings in, a decision out; no browser API.
//
// The rules, in order (the first that speaks decides):
//   1. a private (incognito) window: never (the manifest keeps the extension out of
//      them too; this is the second lock);
//   2. a page with no room (not http or https, or no valid URL): nothing to join;
//   3. a site on the built-in list (mail, banking, sign-in pages): never, whatever
//      the site's switch says;
//   4. a local or private address (localhost, 127/8, 10/8, 172.16/12, 192.168/16,
//      169.254/16, 100.64/10, fc00::/7, fe80::/10, one-label names, .local and the
//      other home and intranet suffixes): only when the options allow local addresses;
//   5. a site the person switched off: not;
//   6. otherwise: the room of the page's canonical URL.
//
// Only names can be judged here: the browser does not tell an extension what address a
// name resolved to, so an intranet behind a public-looking name is not recognised.

import { canonicalUrl } from "../js/rooms.js";

export const MAX_SITES = 1000; // switches kept; the oldest goes first

// Built-in: the sites a chat has no business on. A host matches a listed domain and its
// subdomains; `labels` are first labels; `contains` are text inside any label.
const NEVER = [
  {
    kind: "mail",
    domains: ["mail.google.com", "outlook.live.com", "outlook.office.com", "outlook.office365.com", "mail.yahoo.com", "mail.proton.me", "mail.aol.com", "mail.zoho.com", "app.fastmail.com", "mail.yandex.ru", "mail.ru", "gmx.net", "web.de", "icloud.com", "tutanota.com", "tuta.com"],
    labels: ["mail", "webmail", "email", "inbox", "owa", "roundcube"],
    contains: [],
  },
  {
    kind: "banking",
    domains: ["bank", "paypal.com", "chase.com", "wellsfargo.com", "citi.com", "americanexpress.com", "capitalone.com", "hsbc.com", "barclays.co.uk", "santander.com", "revolut.com", "wise.com", "n26.com", "ing.com", "ing.de", "sparkasse.de", "comdirect.de", "schwab.com", "fidelity.com", "vanguard.com", "venmo.com", "stripe.com", "klarna.com"],
    labels: ["banking", "onlinebanking", "netbanking", "ebanking"],
    contains: ["bank"],
  },
  {
    kind: "sign-in",
    domains: ["accounts.google.com", "login.microsoftonline.com", "login.live.com", "appleid.apple.com", "account.apple.com", "id.atlassian.com"],
    labels: ["login", "signin", "sso", "auth", "passport"],
    contains: [],
  },
];

const LISTED_TEXT = {
  mail: "pagemesh never joins on mail sites",
  banking: "pagemesh never joins on banking and payment sites",
  "sign-in": "pagemesh never joins on sign-in pages",
};

// Names that only mean something on a home or company network (RFC 6761, 6762, 8375).
const LOCAL_SUFFIXES = ["localhost", "local", "lan", "home", "internal", "intranet", "corp", "localdomain", "home.arpa"];

export function siteOf(canonical) {
  // The switch's key for a page: its host and any non-default port (http and https of
  // one host share a switch).
  return new URL(canonical).host;
}

export function listedAs(host) {
  // The built-in list's kind for `host` ("mail", "banking", "sign-in"), or null.
  const name = host.replace(/:\d+$/, "");
  const labels = name.split(".");
  for (const rule of NEVER) {
    if (rule.domains.some((domain) => name === domain || name.endsWith(`.${domain}`))) return rule.kind;
    if (rule.labels.includes(labels[0])) return rule.kind;
    if (labels.some((label) => rule.contains.some((text) => label.includes(text)))) return rule.kind;
  }
  return null;
}

function ipv4(name) {
  const parts = name.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return null;
  return parts.map(Number);
}

function privateIpv4([a, b]) {
  return a === 0 || a === 10 || a === 127 || (a === 100 && b >= 64 && b <= 127) || (a === 169 && b === 254) || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
}

function privateIpv6(literal) {
  // `literal` as WHATWG URL writes it: compressed, lower-case, within brackets.
  const address = literal.slice(1, -1);
  if (address === "::1" || address === "::") return true;
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(address);
  if (mapped) {
    const [high, low] = [parseInt(mapped[1], 16), parseInt(mapped[2], 16)];
    return privateIpv4([high >> 8, high & 255, low >> 8, low & 255]);
  }
  const first = parseInt(address.split(":")[0] || "0", 16);
  return (first & 0xfe00) === 0xfc00 || (first & 0xffc0) === 0xfe80;
}

export function isLocal(host) {
  // True for a host on a loopback, private, link-local or shared address, or named so
  // only a local network knows it.
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.replace(/:\d+$/, "");
  if (name.startsWith("[")) return privateIpv6(name);
  const v4 = ipv4(name);
  if (v4) return privateIpv4(v4);
  if (!name.includes(".")) return true; // an intranet's one-label name (http://wiki/)
  return LOCAL_SUFFIXES.some((suffix) => name === suffix || name.endsWith(`.${suffix}`));
}

export function decide(url, { incognito = false, allowLocal = false, sites = {} } = {}) {
  // {room, site, reason, text}: `room` the canonical URL to join, or null with the
  // `reason` ("incognito", "no-room", "listed", "local", "off") and a sentence to show.
  if (incognito) return { room: null, site: null, reason: "incognito", text: "pagemesh is off in private windows" };
  let canonical;
  try {
    canonical = canonicalUrl(String(url ?? ""));
  } catch {
    return { room: null, site: null, reason: "no-room", text: "This page has no room: only http and https pages have one" };
  }
  const site = siteOf(canonical);
  const kind = listedAs(site);
  if (kind !== null) return { room: null, site, reason: "listed", kind, text: LISTED_TEXT[kind] };
  if (!allowLocal && isLocal(site)) {
    return { room: null, site, reason: "local", text: "pagemesh stays out of local and private addresses unless the options allow them" };
  }
  if (sites[site] === false) return { room: null, site, reason: "off", text: `You switched pagemesh off on ${site}` };
  return { room: canonical, site, reason: "on", text: "" };
}

export function switchSite(sites, site, on) {
  // The switches with `site` set to `on` (true: joins, false: stays out), the most
  // recent last; at most MAX_SITES, the oldest dropped. A switch back on is forgotten:
  // on is the default.
  const next = { ...sites };
  delete next[site];
  if (!on) next[site] = false;
  const names = Object.keys(next);
  for (const name of names.slice(0, Math.max(0, names.length - MAX_SITES))) delete next[name];
  return next;
}
