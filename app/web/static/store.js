// Where conversations are kept: the browser's IndexedDB (one object store, keyed by id).
//
// Failures are never swallowed: every call rejects with a StorageError whose `reason` says
// in plain words what went wrong (storage full, storage disabled in a private window...).
// When IndexedDB can't be opened at all, openStore() falls back to a MemoryStore and
// returns the error too, so the page can say that nothing will outlive the tab.

const DB_NAME = "cria-chat";
const DB_VERSION = 1;
const STORE = "conversations";

export class StorageError extends Error {
  constructor(action, cause) {
    const reason = describe(cause);
    super(`Couldn't ${action}: ${reason}`);
    this.name = "StorageError";
    this.action = action;
    this.reason = reason;
    this.cause = cause;
  }
}

function describe(err) {
  const name = err && err.name;
  if (name === "QuotaExceededError") return "the browser's storage for this page is full (delete or export old conversations)";
  if (name === "SecurityError" || name === "InvalidStateError") {
    return "this browser doesn't allow storage here (a private window, or storage turned off)";
  }
  if (name === "VersionError") return "a newer version of this page stored its data here";
  const message = err && err.message ? err.message : String(err ?? "unknown error");
  return name && name !== "Error" ? `${name}: ${message}` : message;
}

function openDatabase() {
  return new Promise((resolve, reject) => {
    let request;
    try {
      if (!window.indexedDB) throw new DOMException("IndexedDB is not available", "InvalidStateError");
      request = window.indexedDB.open(DB_NAME, DB_VERSION);
    } catch (err) {
      reject(err);
      return;
    }
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(STORE)) db.createObjectStore(STORE, { keyPath: "id" });
    };
    request.onsuccess = () => {
      const db = request.result;
      // Another tab upgrading the database: let it, this tab's copy is read-only from here.
      db.onversionchange = () => db.close();
      resolve(db);
    };
    request.onerror = () => reject(request.error);
    request.onblocked = () => reject(new DOMException("another tab keeps an old version open", "InvalidStateError"));
  });
}

/** Conversations in IndexedDB. Records are plain objects (structured-cloned on write). */
export class IdbStore {
  constructor(db) {
    this.db = db;
    this.persistent = true;
  }

  run(mode, action, work) {
    return new Promise((resolve, reject) => {
      try {
        const tx = this.db.transaction(STORE, mode);
        const request = work(tx.objectStore(STORE));
        tx.oncomplete = () => resolve(request ? request.result : undefined);
        tx.onerror = () => reject(new StorageError(action, tx.error));
        tx.onabort = () => reject(new StorageError(action, tx.error ?? new DOMException("aborted", "AbortError")));
        // Commit now rather than when the task ends: a reload right after a save keeps it.
        if (mode === "readwrite" && typeof tx.commit === "function") tx.commit();
      } catch (err) {
        reject(new StorageError(action, err));
      }
    });
  }

  all() {
    return this.run("readonly", "read the saved conversations", (store) => store.getAll());
  }

  put(conversation) {
    return this.run("readwrite", "save the conversation", (store) => store.put(conversation));
  }

  putMany(conversations) {
    return this.run("readwrite", "save the imported conversations", (store) => {
      for (const conversation of conversations) store.put(conversation);
      return null;
    });
  }

  delete(id) {
    return this.run("readwrite", "delete the conversation", (store) => store.delete(id));
  }
}

/** The fallback when IndexedDB is unavailable: conversations last as long as the tab. */
export class MemoryStore {
  constructor() {
    this.records = new Map();
    this.persistent = false;
  }

  async all() {
    return [...this.records.values()].map((record) => structuredClone(record));
  }

  async put(conversation) {
    this.records.set(conversation.id, structuredClone(conversation));
  }

  async putMany(conversations) {
    for (const conversation of conversations) await this.put(conversation);
  }

  async delete(id) {
    this.records.delete(id);
  }
}

/** Open the conversation store: {store, error}; error is a StorageError when it fell back. */
export async function openStore() {
  try {
    return { store: new IdbStore(await openDatabase()), error: null };
  } catch (err) {
    return { store: new MemoryStore(), error: new StorageError("open the browser's storage", err) };
  }
}
