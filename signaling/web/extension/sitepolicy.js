// Where the extension joins a page's room, and where it never does (docs/extension.md).
// Pure: a tab's URL and the person's settings in, a decision out; no browser API.
//
// The rules, in order (the first that speaks decides):
//   1. a private (incognito) window: never (the manifest keeps the extension out of
//      them too; this is the second lock);
//   2. a page with no room (not http or https, or no valid URL): nothing to join;
//   3. a site on the built-in list (mail, banking, sign-in pages): never, whatever
//      the site's switch says;
//   4. a local or private address: any address of the IANA special-purpose registries
//      (loopback, private, link-local, shared, documentation, benchmarking, multicast,
//      reserved; 127/8, 10/8, 192.168/16, 198.18/15, fc00::/7, fe80::/10, fec0::/10,
//      ::/96...), the IPv4 inside an IPv4-mapped, NAT64 or 6to4 address judged by its
//      own rule (the list of relay/policy.py), one-label names, .local and the other
//      home and intranet suffixes: only when the options allow local addresses;
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

// The IANA special-purpose address registries (RFC 6890 and later updates), as
// relay/policy.py refuses them: none of them is a public site's address.
const SPECIAL_IPV4 = [
  ["0.0.0.0", 8], // "this network", unspecified (RFC 791, 1122)
  ["10.0.0.0", 8], // private (RFC 1918)
  ["100.64.0.0", 10], // shared address space, CGNAT (RFC 6598)
  ["127.0.0.0", 8], // loopback (RFC 1122)
  ["169.254.0.0", 16], // link-local, cloud metadata (RFC 3927)
  ["172.16.0.0", 12], // private (RFC 1918)
  ["192.0.0.0", 24], // IETF protocol assignments (RFC 6890)
  ["192.0.2.0", 24], // documentation TEST-NET-1 (RFC 5737)
  ["192.31.196.0", 24], // AS112-v4 (RFC 7535)
  ["192.52.193.0", 24], // AMT (RFC 7450)
  ["192.88.99.0", 24], // deprecated 6to4 relay anycast (RFC 7526)
  ["192.168.0.0", 16], // private (RFC 1918)
  ["192.175.48.0", 24], // direct delegation AS112 (RFC 7534)
  ["198.18.0.0", 15], // benchmarking (RFC 2544)
  ["198.51.100.0", 24], // documentation TEST-NET-2 (RFC 5737)
  ["203.0.113.0", 24], // documentation TEST-NET-3 (RFC 5737)
  ["224.0.0.0", 4], // multicast (RFC 5771)
  ["240.0.0.0", 4], // reserved, and limited broadcast 255.255.255.255 (RFC 1112, 919)
].map(([base, bits]) => [BigInt(ipv4Number(ipv4(base))), bits]);

const SPECIAL_IPV6 = [
  ["::", 96], // unspecified, loopback, deprecated IPv4-compatible (RFC 4291)
  ["64:ff9b:1::", 48], // local-use IPv4/IPv6 translation (RFC 8215)
  ["100::", 64], // discard-only (RFC 6666)
  ["2001::", 23], // IETF protocol assignments: Teredo, benchmarking, ORCHID (RFC 2928)
  ["2001:db8::", 32], // documentation (RFC 3849)
  ["2620:4f:8000::", 48], // direct delegation AS112 (RFC 7534)
  ["3fff::", 20], // documentation (RFC 9637)
  ["5f00::", 16], // segment routing SIDs (RFC 9602)
  ["fc00::", 7], // unique local, ULA (RFC 4193)
  ["fe80::", 10], // link-local (RFC 4291)
  ["fec0::", 10], // deprecated site-local (RFC 3879)
  ["ff00::", 8], // multicast (RFC 4291)
].map(([base, bits]) => [ipv6Number(base), bits]);

// IPv6 forms that carry an IPv4 address, judged by that address: IPv4-mapped
// (RFC 4291), the NAT64 well-known prefix (RFC 6052) and 6to4 (RFC 3056).
const MAPPED = [ipv6Number("::ffff:0:0"), 96];
const NAT64 = [ipv6Number("64:ff9b::"), 96];
const SIX_TO_FOUR = [ipv6Number("2002::"), 16];

function ipv4(name) {
  const parts = name.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return null;
  return parts.map(Number);
}

function ipv4Number(parts) {
  return parts.reduce((n, p) => n * 256 + p, 0);
}

function ipv6Number(address) {
  // A 128-bit BigInt for an IPv6 address as text ("::" and a dotted IPv4 tail allowed),
  // or null if it is not one.
  let text = address;
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (tail) {
    const v4 = ipv4(tail[1]);
    if (!v4) return null;
    const n = ipv4Number(v4);
    text = text.slice(0, -tail[1].length) + `${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (part) => (part === "" ? [] : part.split(":"));
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...rest];
  if (!all.every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return null;
  return all.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function within(number, [base, bits], width) {
  const shift = BigInt(width - bits);
  return number >> shift === base >> shift;
}

function specialIpv4(number) {
  return SPECIAL_IPV4.some((net) => within(BigInt(number), net, 32));
}

function specialIpv6(number) {
  if (within(number, MAPPED, 128) || within(number, NAT64, 128)) return specialIpv4(number & 0xffffffffn);
  if (within(number, SIX_TO_FOUR, 128)) return specialIpv4((number >> 80n) & 0xffffffffn);
  return SPECIAL_IPV6.some((net) => within(number, net, 128));
}

export function isLocal(host) {
  // True for a host on a loopback, private, link-local or shared address, or named so
  // only a local network knows it.
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.replace(/:\d+$/, "");
  if (name.startsWith("[")) {
    const v6 = ipv6Number(name.slice(1, -1));
    return v6 === null || specialIpv6(v6); // WHATWG URL writes every literal it accepts
  }
  const v4 = ipv4(name);
  if (v4) return specialIpv4(ipv4Number(v4));
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
