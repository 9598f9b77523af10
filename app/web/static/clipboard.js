// Copying text: the Clipboard API where the page may use it (a secure context such as
// 127.0.0.1), else the old execCommand("copy") on a hidden text area (plain http on a LAN).

export async function copyText(textToCopy) {
  try {
    await navigator.clipboard.writeText(textToCopy);
    return true;
  } catch {
    const area = document.createElement("textarea");
    area.value = textToCopy;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}
