// Small DOM helpers the page's views share (chat, contacts, direct messages, blocking).
// Built with DOM calls only: text stays text, nothing is parsed as markup.

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  // An element with `props` (a property when the element has one, else an attribute;
  // `dataset` merged) and `children` (null and undefined left out).
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node) node[name] = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function size(bytes) {
  // A byte count for people: 512 B, 1.5 KB, 2.0 MB.
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) {
    bytes /= 1024;
    i++;
  }
  return `${bytes.toFixed(i ? 1 : 0)} ${units[i]}`;
}
