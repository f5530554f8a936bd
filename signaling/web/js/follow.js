// The transcript follows the conversation as a chat app's does: while the reader
// is at the bottom, new messages keep it there; once they scroll up to read, it
// stays where they are and a pill counts what arrived below ("3 new messages"),
// which takes them down when pressed.

const NEAR = 48; // px from the bottom that still count as "at the bottom"

export class TranscriptFollower {
  constructor(list, pill) {
    this.list = list;
    this.pill = pill;
    this.stuck = true; // the reader is at the bottom (as of their last scroll)
    this.pinnedTop = 0; // where toBottom() last left the list ...
    this.pinnedHeight = 0; // ... and how tall the list was then
    this.unseen = 0;
    list.addEventListener("scroll", () => {
      this.stuck = this.atBottom();
      if (this.stuck) this.clear();
    });
    pill.addEventListener("click", () => this.jump());
    // Images, a wrapped line or a resized window change the height under the reader.
    new ResizeObserver(() => this.settle()).observe(list);
    this.render();
  }

  atBottom() {
    const { scrollHeight, scrollTop, clientHeight } = this.list;
    return scrollHeight - scrollTop - clientHeight <= NEAR;
  }

  noticeScroll() {
    // The scroll event comes a frame after the reader moved; a message arriving in
    // between must not pull them back down, so look at where the list is now. A list
    // that grew taller (the header reflowed) pulls scrollTop down as much: not a read.
    const { scrollTop, clientHeight } = this.list;
    const grew = Math.max(0, clientHeight - this.pinnedHeight);
    if (this.stuck && this.pinnedTop - scrollTop - grew > NEAR) this.stuck = false;
  }

  added({ isNew = false, mine = false } = {}) {
    // After something was put in the list: follow it, or count it as unseen below.
    this.noticeScroll();
    if (mine) this.stuck = true;
    if (this.stuck) this.toBottom();
    else if (isNew) {
      this.unseen += 1;
      this.render();
    }
  }

  settle() {
    // Content changed height (an image loaded): stay at the bottom if we were there.
    this.noticeScroll();
    if (this.stuck) this.toBottom();
  }

  toBottom() {
    this.list.scrollTop = this.list.scrollHeight;
    this.pinnedTop = this.list.scrollTop;
    this.pinnedHeight = this.list.clientHeight;
  }

  jump() {
    this.stuck = true;
    this.toBottom();
    this.clear();
    this.list.focus({ preventScroll: true });
  }

  clear() {
    if (!this.unseen) return;
    this.unseen = 0;
    this.render();
  }

  reset() {
    this.stuck = true;
    this.unseen = 0;
    this.render();
  }

  render() {
    this.pill.hidden = this.unseen === 0;
    this.pill.textContent = `${this.unseen} new message${this.unseen === 1 ? "" : "s"} ↓`;
    this.pill.setAttribute("aria-label", `${this.unseen} new message${this.unseen === 1 ? "" : "s"}: jump to the newest`);
  }
}
