// What the page does for a reader who is elsewhere: while the tab is hidden,
// the title counts the messages that arrived ("(3) pagemesh"), and, if they
// asked for it, each one raises a desktop notification. Permission is asked
// only when they tick the box, never on load. The choice is remembered in this
// browser (localStorage), the permission by the browser itself.

const PREFERENCE = "pagemesh.notify";

export class Attention {
  constructor(doc, { title, checkbox, note, notifications = globalThis.Notification, storage = globalThis.localStorage }) {
    this.doc = doc;
    this.title = title;
    this.checkbox = checkbox;
    this.note = note; // where a refusal is said
    this.Notification = notifications;
    this.storage = storage;
    this.unread = 0;
    doc.addEventListener("visibilitychange", () => {
      if (!this.hidden) this.seen();
    });
    if (!this.Notification) {
      checkbox.disabled = true;
      this.say("This browser has no desktop notifications");
    } else {
      checkbox.checked = this.wanted && this.Notification.permission === "granted";
    }
    checkbox.addEventListener("change", () => this.toggle());
  }

  get hidden() {
    return this.doc.hidden;
  }

  get wanted() {
    try {
      return this.storage?.getItem(PREFERENCE) === "on";
    } catch {
      return false;
    }
  }

  remember(on) {
    try {
      this.storage?.setItem(PREFERENCE, on ? "on" : "off");
    } catch {
      // private mode: the choice lasts as long as the page
    }
  }

  say(text) {
    this.note.textContent = text;
    this.note.hidden = !text;
  }

  async toggle() {
    // The box was ticked or cleared by the reader: this click may ask for permission.
    const on = this.checkbox.checked;
    this.remember(on);
    this.say("");
    if (!on) return;
    let permission = this.Notification.permission;
    if (permission === "default") permission = await this.Notification.requestPermission();
    if (permission !== "granted") {
      this.checkbox.checked = false;
      this.remember(false);
      this.say("Notifications are blocked for this page in the browser's settings");
    }
  }

  arrived({ from, text, tag }) {
    // A message from someone else: counted while hidden, notified if asked.
    if (!this.hidden) return;
    this.unread += 1;
    this.doc.title = `(${this.unread}) ${this.title}`;
    if (this.checkbox.checked && this.Notification?.permission === "granted") {
      try {
        const notice = new this.Notification(from, { body: text.slice(0, 200), tag, renotify: false });
        notice.onclick = () => {
          globalThis.focus?.();
          notice.close();
        };
      } catch {
        // some browsers only notify from a service worker: the title still counts
      }
    }
  }

  seen() {
    this.unread = 0;
    this.doc.title = this.title;
  }
}
