// Small DOM helpers shared by the page's views.

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const chat = () => document.getElementById("chat");

/** Follow the newest text only if the reader is already at (or near) the bottom. */
export function nearBottom() {
  const box = chat();
  return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
}

export function scrollToEnd(force = false) {
  const box = chat();
  if (force || nearBottom()) box.scrollTop = box.scrollHeight;
}

export function setEmptyState(visible) {
  document.getElementById("empty").hidden = !visible;
}
