// The real AI SDK client (`Chat` from @ai-sdk/react + `DefaultChatTransport` from ai), run by
// node against this project's API, as a web app would. Usage:
//   node ai_sdk_client.mjs PACKAGES_DIR BASE_URL USER SCENARIO [NEWEST_ONLY]
// SCENARIO "chats": two chats of one user, switched between, a regenerate, history loaded
// (NEWEST_ONLY, "a" or "b": the chat whose transport sends only the newest message; the other
// sends the whole history, the default); "resume": a page reloaded mid-turn resumes the stream;
// "stop": stop() with the stop endpoint; "tools": an answer with tool calls (input streamed,
// output) and one with thinking, as the client's message parts.
// Prints one JSON object with what it saw; tests/test_ai_sdk.py judges it.
import { createRequire } from "node:module";

const [, , packages, base, user, scenario, newestOnly = "b"] = process.argv;
const require = createRequire(`${packages}/node_modules/`);
const { DefaultChatTransport } = require("ai");
const { Chat } = require("@ai-sdk/react");

const headers = { "X-User-Id": user };
const textOf = (message) =>
  message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
const shown = (chat) => chat.messages.map((m) => ({ id: m.id, role: m.role, text: textOf(m) }));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const sent = [];  // what each chat's transport sent: {chat, trigger, messageId, messages}

function transport(newestOnly, name = "") {
  return new DefaultChatTransport({
    api: `${base}/api/chat`,
    headers,
    // the server keeps the history: send only the newest message (the README's advice)
    ...(newestOnly && {
      prepareSendMessagesRequest: ({ id, messages, trigger, messageId }) => ({
        body: { id, messages: messages.slice(-1), trigger, messageId },
      }),
    }),
    fetch: async (url, init) => {
      if (init?.method === "POST" && typeof init.body === "string") {
        const body = JSON.parse(init.body);
        sent.push({ chat: name, trigger: body.trigger, messageId: body.messageId ?? null,
                    messages: body.messages.map((m) => [m.id, m.role]) });
      }
      return fetch(url, init);
    },
  });
}

async function history(id) {
  const response = await fetch(`${base}/api/chats/${id}/messages?limit=200`, { headers });
  return { status: response.status, ...(await response.json()) };
}

async function chats() {
  const a = new Chat({ id: `plums-${user}`, transport: transport(newestOnly === "a", "a") });
  const b = new Chat({ id: `pears-${user}`, transport: transport(newestOnly === "b", "b") });
  const steps = [];
  const step = async (name, chat, action) => {  // wait with the Chat API, then note its state
    await action();
    steps.push({ step: name, status: chat.status, error: String(chat.error ?? ""),
                 messages: shown(chat) });
  };
  await step("a: Remember plum.", a, () => a.sendMessage({ text: "Remember plum." }));
  await step("b: Remember pear.", b, () => b.sendMessage({ text: "Remember pear." }));
  await step("a: Which fruit?", a, () => a.sendMessage({ text: "Which fruit?" }));
  await step("b: Which fruit?", b, () => b.sendMessage({ text: "Which fruit?" }));
  await step("a: regenerate", a, () => a.regenerate());
  return {
    steps, sent, a: shown(a), b: shown(b),
    historyA: await history(a.id), historyB: await history(b.id),
  };
}

async function resume() {
  const id = `story-${user}`;
  const first = new Chat({ id, transport: transport(true) });
  const sending = first.sendMessage({ text: "Tell me a story about plums and pears." });
  while (!first.messages.some((m) => m.role === "assistant" && textOf(m))) await sleep(20);
  const seenBefore = textOf(first.messages.at(-1));
  // "the page reloads": a new client with the history so far, resuming the running stream
  const reloaded = new Chat({ id, transport: transport(true), messages: first.messages.slice(0, 1) });
  await reloaded.resumeStream();
  await sending;
  return {
    seenBefore, resumed: shown(reloaded), first: shown(first), status: reloaded.status,
    error: String(reloaded.error ?? ""), history: (await history(id)).messages,
  };
}

async function stop() {
  const id = `stopped-${user}`;
  const chat = new Chat({ id, transport: transport(true) });
  const sending = chat.sendMessage({ text: "Tell me everything about plums." });
  while (!chat.messages.some((m) => m.role === "assistant" && textOf(m))) await sleep(20);
  const stopped = await fetch(`${base}/api/chat/${id}/stop`, { method: "POST", headers });
  await chat.stop();  // the client side: its fetch ends
  await sending.catch(() => {});
  await sleep(300);
  await chat.sendMessage({ text: "Go on." });  // accepted at once
  return { stopStatus: stopped.status, chat: shown(chat), status: chat.status,
           error: String(chat.error ?? ""), history: (await history(id)).messages };
}

async function tools() {
  const chat = new Chat({ id: `tools-${user}`, transport: transport(true) });
  const parts = (message) => message.parts.map((p) => (
    p.type === "dynamic-tool"
      ? { type: p.type, toolName: p.toolName, state: p.state, input: p.input, output: p.output,
          errorText: p.errorText }
      : { type: p.type, text: p.text, state: p.state }));
  const seen = [];
  for (const text of ["Please write hello sdk to sdk.txt", "Think about figs."]) {
    await chat.sendMessage({ text });
    seen.push({ status: chat.status, error: String(chat.error ?? ""),
                parts: parts(chat.messages.at(-1)) });
  }
  return { seen };
}

const run = { chats, resume, stop, tools }[scenario];
console.log(JSON.stringify(await run()));
