// The model picker: the served models from /v1/models, read defensively (OpenAI's list
// shape; an entry may also say whether it is loaded, as a multi-model server will), and
// which one a conversation uses.

const DEFAULT_MODEL_KEY = "cria.model";

const str = (value) => (typeof value === "string" && value.trim() ? value.trim() : null);

/** The load state of a model entry in a few words, or null if the entry doesn't say. */
export function loadState(entry) {
  if (entry.loaded === true) return "loaded";
  if (entry.loaded === false) return "not loaded";
  const state = entry.state ?? entry.status;
  if (str(state)) return str(state).toLowerCase();
  if (state && typeof state === "object") {
    const value = str(state.value) ?? str(state.state) ?? str(state.status);
    if (value) return value.toLowerCase();
  }
  return null;
}

/** [{id, state}] from a /v1/models body; anything malformed is skipped, never thrown. */
export function parseModels(body) {
  const list = Array.isArray(body) ? body : body && Array.isArray(body.data) ? body.data : Array.isArray(body?.models) ? body.models : [];
  const seen = new Set();
  const models = [];
  for (const entry of list) {
    if (!entry || typeof entry !== "object") continue;
    const id = str(entry.id) ?? str(entry.name) ?? str(entry.model);
    if (!id || seen.has(id)) continue;
    seen.add(id);
    models.push({ id, state: loadState(entry) });
  }
  return models;
}

/** True when a state word means the model still has to be loaded before it answers. */
export function needsLoading(state) {
  return Boolean(state) && !["loaded", "ready", "running", "ok", "available"].includes(state);
}

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

export function loadDefaultModel() {
  return storage()?.getItem(DEFAULT_MODEL_KEY) || "";
}

export function saveDefaultModel(id) {
  try {
    storage()?.setItem(DEFAULT_MODEL_KEY, id);
  } catch {
    // Settings that can't be kept are not worth an alert: the conversation keeps the model.
  }
}

/**
 * The model a conversation's requests name: its own if it is served (or the list is not
 * known), else the remembered default if served, else the first served model; "" when
 * nothing is known (the server then uses its default model).
 */
export function effectiveModel(wanted, models) {
  if (!models.length) return wanted || "";
  const served = (id) => id && models.some((m) => m.id === id);
  if (served(wanted)) return wanted;
  const fallback = loadDefaultModel();
  return served(fallback) ? fallback : models[0].id;
}

/** Fill the <select> with the models (the chosen one selected); disabled when empty. */
export function showModelPicker(select, models, chosen) {
  const options = models.map((model) => {
    const option = document.createElement("option");
    option.value = model.id;
    option.textContent = model.state ? `${model.id} · ${model.state}` : model.id;
    option.dataset.state = model.state ?? "";
    return option;
  });
  if (!options.length) {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "Server's model";
    options.push(option);
  }
  select.replaceChildren(...options);
  select.value = chosen && models.some((m) => m.id === chosen) ? chosen : options[0].value;
  select.disabled = models.length < 2;
  select.title = models.length < 2 ? "The model this server serves" : "The model for this conversation";
}
