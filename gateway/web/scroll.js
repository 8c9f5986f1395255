// Scrolling as chat apps do: the view follows new messages while it is at
// the bottom, and otherwise keeps the message the reader is looking at
// where it is, whatever is added above or below it.

// bottomSlackPx: this close to the bottom counts as at the bottom.
const bottomSlackPx = 48;

export function isAtBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < bottomSlackPx;
}

// captureAnchor notes the first message still (partly) in view and how
// far it is from the top of the box.
export function captureAnchor(box) {
  const top = box.getBoundingClientRect().top;
  for (const e of box.querySelectorAll('.msg[data-seq]')) {
    const r = e.getBoundingClientRect();
    if (r.bottom > top) return { seq: e.dataset.seq, offset: r.top - top };
  }
  return null;
}

// restoreAnchor scrolls so the anchored message is back where it was.
export function restoreAnchor(box, anchor) {
  const e = anchor && box.querySelector(`.msg[data-seq="${CSS.escape(anchor.seq)}"]`);
  if (!e) return;
  box.scrollTop += e.getBoundingClientRect().top - box.getBoundingClientRect().top - anchor.offset;
}

// stickToBottom keeps a box that was at the bottom there when it changes
// size (a phone's keyboard opening, a rotation, the composer growing).
// A resize fires its scroll events before the ResizeObserver runs, with
// the content already reflowed: those must not count as the reader
// leaving the bottom, so a scroll seen at a new size is ignored.
export function stickToBottom(box) {
  let atBottom = true;
  let w = box.clientWidth, h = box.clientHeight;
  box.addEventListener('scroll', () => {
    if (box.clientWidth === w && box.clientHeight === h) atBottom = isAtBottom(box);
  });
  new ResizeObserver(() => {
    w = box.clientWidth; h = box.clientHeight;
    if (atBottom) box.scrollTop = box.scrollHeight;
  }).observe(box);
}
