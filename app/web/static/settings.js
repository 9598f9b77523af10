// Settings (system prompt, temperature, max tokens) and the API key, kept in localStorage,
// and the two dialogs that edit them.

const SETTINGS_KEY = "cria.settings";
const API_KEY_KEY = "cria.apiKey";

export const DEFAULTS = Object.freeze({
  systemPrompt: "You are a helpful assistant.",
  temperature: 0.7,
  maxTokens: 512,
});

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: settings last for this page only
  }
}

function clampNumber(value, min, max, fallback) {
  const number = Number(value);
  return Number.isFinite(number) ? Math.min(max, Math.max(min, number)) : fallback;
}

/** Normalise settings from storage or the form: wrong types fall back to the defaults. */
export function cleanSettings(raw) {
  const source = raw && typeof raw === "object" ? raw : {};
  const maxTokens =
    source.maxTokens === null || source.maxTokens === ""
      ? null
      : Math.round(clampNumber(source.maxTokens, 1, 32768, DEFAULTS.maxTokens));
  return {
    systemPrompt: typeof source.systemPrompt === "string" ? source.systemPrompt : DEFAULTS.systemPrompt,
    temperature: Math.round(clampNumber(source.temperature, 0, 2, DEFAULTS.temperature) * 100) / 100,
    maxTokens,
  };
}

export function loadSettings() {
  try {
    return cleanSettings(JSON.parse(storage()?.getItem(SETTINGS_KEY) ?? "null"));
  } catch {
    return cleanSettings(null);
  }
}

export function saveSettings(settings) {
  storage()?.setItem(SETTINGS_KEY, JSON.stringify(cleanSettings(settings)));
}

export function loadApiKey() {
  return storage()?.getItem(API_KEY_KEY) || "";
}

export function saveApiKey(key) {
  const store = storage();
  if (!store) return;
  if (key) store.setItem(API_KEY_KEY, key);
  else store.removeItem(API_KEY_KEY);
}

/** Open the settings dialog; resolves with the new settings and key, or null if cancelled. */
export function editSettings(settings, apiKey) {
  const dialog = document.getElementById("settings-dialog");
  const form = dialog.querySelector("form");
  const fields = form.elements;
  fields.systemPrompt.value = settings.systemPrompt;
  fields.temperature.value = String(settings.temperature);
  fields.maxTokens.value = settings.maxTokens === null ? "" : String(settings.maxTokens);
  fields.apiKey.value = apiKey;
  const output = document.getElementById("temperature-value");
  const showTemperature = () => {
    output.textContent = Number(fields.temperature.value).toFixed(2);
  };
  showTemperature();
  fields.temperature.oninput = showTemperature;
  fields.resetSettings.onclick = () => {
    fields.systemPrompt.value = DEFAULTS.systemPrompt;
    fields.temperature.value = String(DEFAULTS.temperature);
    fields.maxTokens.value = String(DEFAULTS.maxTokens);
    showTemperature();
  };
  return showDialog(dialog, () => ({
    settings: cleanSettings({
      systemPrompt: fields.systemPrompt.value,
      temperature: fields.temperature.value,
      maxTokens: fields.maxTokens.value.trim(),
    }),
    apiKey: fields.apiKey.value.trim(),
  }));
}

/** Ask for the API key after a 401; resolves with the key, or null if cancelled. */
export function askForApiKey(message, hadKey) {
  const dialog = document.getElementById("key-dialog");
  const fields = dialog.querySelector("form").elements;
  const note = document.getElementById("key-dialog-note");
  note.textContent = hadKey
    ? "The saved API key was not accepted. Enter another one."
    : "This server requires an API key.";
  const detail = document.getElementById("key-dialog-detail");
  detail.textContent = message || "";
  detail.hidden = !message;
  fields.keyInput.value = "";
  return showDialog(dialog, () => fields.keyInput.value.trim() || null);
}

function showDialog(dialog, read) {
  return new Promise((resolve) => {
    const form = dialog.querySelector("form");
    const onClose = () => {
      dialog.removeEventListener("close", onClose);
      resolve(dialog.returnValue === "save" ? read() : null);
    };
    dialog.returnValue = "";
    dialog.addEventListener("close", onClose);
    for (const button of form.querySelectorAll("[data-close]")) {
      button.onclick = () => dialog.close("cancel");
    }
    form.onsubmit = (event) => {
      if (!form.checkValidity()) return;
      event.preventDefault();
      dialog.close("save");
    };
    dialog.showModal();
    const first = form.querySelector("[autofocus]") || form.querySelector("input, textarea");
    if (first) first.focus();
  });
}

/** Ask a yes/no question in the confirm dialog; resolves true when confirmed. */
export function confirmAction(title, detail) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-detail").textContent = detail;
  return showDialog(dialog, () => true).then((answer) => answer === true);
}
