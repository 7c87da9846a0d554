// The chat page: no build step. It lists the conversations (/api/chats), loads the current
// one's messages, sends turns to /api/chat with its id and reads the AI SDK UI message stream
// as it arrives. A new conversation is a new client-chosen id: the server starts it on its
// first turn.
"use strict";

const $ = (id) => document.getElementById(id);
const stored = (key) => localStorage.getItem(key) || "";

function identity() {
  const token = $("token").value.trim();
  const user = $("user").value.trim();
  if (token) return { Authorization: `Bearer ${token}` };
  if (user) return { "X-User-Id": user };
  return {};
}

function setStatus(text) { $("status").textContent = text; }

function busy(on) {
  for (const id of ["send", "reset", "prompt", "load", "new-chat", "rename", "delete"]) {
    $(id).disabled = on;
  }
  $("stop").hidden = !on;
  $("stop").disabled = false;
}

const newId = () => `c-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
let current = stored("chat") || newId();
let known = [];  // the conversations the server has, newest first

function choose(id) {
  current = id;
  localStorage.setItem("chat", id);
  const chat = known.find((c) => c.id === id);
  $("chat-title").textContent = chat ? chat.title : "New conversation";
  for (const button of $("chat-list").querySelectorAll("button")) {
    button.setAttribute("aria-current", String(button.dataset.id === id));
  }
}

async function loadChats() {
  const response = await fetch("/api/chats?limit=100", { headers: identity() });
  if (!response.ok) return setStatus(await errorOf(response));
  known = (await response.json()).chats;
  $("chat-list").replaceChildren(...known.map((chat) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.id = chat.id;
    button.textContent = chat.title;
    button.title = `${chat.title} (${chat.turns} turns)`;
    button.addEventListener("click", () => { choose(chat.id); loadHistory(); });
    item.appendChild(button);
    return item;
  }));
  choose(current);
}

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.textContent = text;
  $("messages").appendChild(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return `${body.error.code}: ${body.error.message}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function loadHistory() {
  $("messages").replaceChildren();
  setStatus("loading…");
  const url = `/api/chats/${encodeURIComponent(current)}/messages?limit=200`;
  const response = await fetch(url, { headers: identity() });
  if (response.status === 404) return setStatus("ready");
  if (!response.ok) return setStatus(await errorOf(response));
  const body = await response.json();
  for (const message of body.messages) addMessage(message.role, message.text);
  setStatus("ready");
}

async function* uiParts(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const line = event.split("\n").find((l) => l.startsWith("data: "));  // after "id: n"
      if (!line) continue;
      const data = line.slice(6);
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

// A tool call or the model's thinking, shown compactly: one line (a <summary>) that opens
// on a click to the whole of it (for a tool: its input and its output, as far as the server
// sent it).
function fold(className, title) {
  const box = document.createElement("details");
  box.className = className;
  const summary = document.createElement("summary");
  summary.textContent = title;
  const body = document.createElement("pre");
  box.append(summary, body);
  return { box, summary, body };
}

const oneLine = (text, limit = 80) => {
  const flat = String(text).replace(/\s+/g, " ").trim();
  return flat.length > limit ? `${flat.slice(0, limit - 1)}…` : flat;
};
const inputLine = (input) => oneLine(typeof input === "string" ? input : JSON.stringify(input ?? {}));

// Shows one streamed answer: its text, thinking and tool calls in the order they came.
function answerView(answer) {
  const tools = new Map();  // toolCallId -> {box, summary, body, name, raw}
  const folds = new Map();  // reasoning id -> fold
  let text = null;
  const tool = (id, name) => {
    if (!tools.has(id)) {
      const shown = { ...fold("tool", name), name, raw: "" };
      answer.appendChild(shown.box);
      tools.set(id, shown);
    }
    return tools.get(id);
  };
  const settle = (shown, mark, output) => {
    shown.summary.textContent = `${shown.summary.textContent} ${mark} ${oneLine(output, 60)}`;
    shown.body.textContent += `\n→ ${output}`;
    shown.box.classList.add(mark === "✗" ? "failed" : "done");
  };
  return {
    show(part) {
      if (part.type === "text-start") {  // a new text node: text after a tool goes after it
        text = document.createTextNode("");
        answer.appendChild(text);
      } else if (part.type === "text-delta") {
        if (!text) answer.appendChild(text = document.createTextNode(""));
        text.appendData(part.delta);
      } else if (part.type === "reasoning-start") {
        const shown = fold("reasoning", "thinking…");
        answer.appendChild(shown.box);
        folds.set(part.id, shown);
      } else if (part.type === "reasoning-delta" && folds.has(part.id)) {
        const shown = folds.get(part.id);
        shown.body.textContent += part.delta;
        shown.summary.textContent = `thinking: ${oneLine(shown.body.textContent, 60)}`;
      } else if (part.type === "tool-input-start") {
        tool(part.toolCallId, part.toolName).summary.textContent = `${part.toolName} …`;
      } else if (part.type === "tool-input-delta" && tools.has(part.toolCallId)) {
        const shown = tools.get(part.toolCallId);
        shown.raw += part.inputTextDelta;
        shown.summary.textContent = `${shown.name} ${inputLine(shown.raw)}`;
      } else if (part.type === "tool-input-available") {
        const shown = tool(part.toolCallId, part.toolName);
        shown.summary.textContent = `${part.toolName} ${inputLine(part.input)}`;
        shown.body.textContent = JSON.stringify(part.input, null, 2);
      } else if (part.type === "tool-output-available" && tools.has(part.toolCallId)) {
        const { text: output, truncated } = part.output || {};
        settle(tools.get(part.toolCallId), "✓",
               `${output ?? ""}${truncated ? "\n[…truncated]" : ""}`);
      } else if (part.type === "tool-output-error" && tools.has(part.toolCallId)) {
        settle(tools.get(part.toolCallId), "✗", part.errorText);
      } else if (part.type === "data-notice") setStatus(part.data.message);
      else if (part.type === "data-error") {
        answer.classList.add("error");
        answer.appendChild(document.createTextNode(`\n${part.data.code}: ${part.data.message}`));
      }
    },
  };
}

async function send(prompt) {
  addMessage("user", prompt);
  const answer = addMessage("assistant", "");
  busy(true);
  setStatus("thinking…");
  try {
    const response = await fetch("/api/chat", {
      method: "POST",
      headers: { ...identity(), "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ prompt, chat_id: current }),
    });
    if (!response.ok) {
      answer.classList.add("error");
      answer.textContent = await errorOf(response);
      return;
    }
    const view = answerView(answer);
    for await (const part of uiParts(response)) view.show(part);
  } catch (error) {
    answer.classList.add("error");
    answer.textContent = `network error: ${error}`;
  } finally {
    await loadChats();
    busy(false);
    if (["thinking…", "stopping…"].includes($("status").textContent)) setStatus("ready");
    $("prompt").focus();
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  $("prompt").value = "";
  send(prompt);
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

// Stop reaches the agent: the server interrupts the turn, keeps what it said, and ends the
// stream (which this page goes on reading to its end).
$("stop").addEventListener("click", async () => {
  $("stop").disabled = true;
  setStatus("stopping…");
  const response = await fetch(`/api/chat/${encodeURIComponent(current)}/stop`,
                               { method: "POST", headers: identity() });
  if (!response.ok) setStatus(await errorOf(response));
});

$("new-chat").addEventListener("click", () => {
  choose(newId());
  $("messages").replaceChildren();
  setStatus("new conversation");
  $("prompt").focus();
});

$("rename").addEventListener("click", async () => {
  const title = prompt("A new title for this conversation:", $("chat-title").textContent);
  if (!title || !title.trim()) return;
  const response = await fetch(`/api/chats/${encodeURIComponent(current)}`, {
    method: "PATCH",
    headers: { ...identity(), "Content-Type": "application/json" },
    body: JSON.stringify({ title }),
  });
  if (!response.ok) return setStatus(await errorOf(response));
  await loadChats();
  setStatus("renamed");
});

$("delete").addEventListener("click", async () => {
  if (!confirm("Delete this conversation?")) return;
  const response = await fetch(`/api/chats/${encodeURIComponent(current)}`,
                               { method: "DELETE", headers: identity() });
  if (!response.ok && response.status !== 404) return setStatus(await errorOf(response));
  known = known.filter((c) => c.id !== current);
  choose(known.length ? known[0].id : newId());
  await loadChats();
  await loadHistory();
  setStatus("deleted");
});

$("reset").addEventListener("click", async () => {
  if (!confirm("Forget every conversation?")) return;
  const response = await fetch("/api/session", { method: "DELETE", headers: identity() });
  if (!response.ok) return setStatus(await errorOf(response));
  $("messages").replaceChildren();
  choose(newId());
  await loadChats();
  setStatus("new conversation");
});

for (const id of ["token", "user"]) {
  $(id).value = stored(id);
  $(id).addEventListener("change", () => localStorage.setItem(id, $(id).value.trim()));
}
async function loadAll() {
  await loadChats();
  await loadHistory();
}

$("load").addEventListener("click", loadAll);
if (stored("token") || stored("user")) {
  $("identity").open = false;
  loadAll();
}
