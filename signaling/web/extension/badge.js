// The count on the toolbar button: at most four characters (Chrome shows no more, and
// background.js refuses a longer text), whatever the node says of a page's size.

export const MAX_BADGE = 4;

export function badgeText(count) {
  if (!Number.isSafeInteger(count) || count < 0) return "";
  if (count <= 9999) return String(count); // 0 .. 9999
  if (count < 1_000_000) return `${Math.floor(count / 1000)}k`; // 10k .. 999k
  if (count < 1_000_000_000) return `${Math.floor(count / 1_000_000)}M`; // 1M .. 999M
  return "1G+";
}
