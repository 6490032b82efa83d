// matrix-js-sdk against a running Ranvier: unread notification counts, as
// Element shows them. Bob writes to Alice; her client's counts rise (a
// mention highlights) and her read receipt brings them down; then a thread's
// own count, reset by a threaded receipt while the main timeline's stays.
// Usage: node unread.mjs BASE_URL ALICE BOB PASSWORD
// Prints one line `RESULT {...}` with the counts seen at each step and exits 0, or exits 1.
import * as sdk from "matrix-js-sdk";

const [baseUrl, aliceName, bobName, password] = process.argv.slice(2);
const TIMEOUT_MS = 20000;
const { Total, Highlight } = sdk.NotificationCountType;

async function login(user) {
  const anonymous = sdk.createClient({ baseUrl });
  const session = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
  });
  return sdk.createClient({
    baseUrl,
    accessToken: session.access_token,
    userId: session.user_id,
    deviceId: session.device_id,
  });
}

// Polls until check() is true (the SDK updates counts as /sync answers arrive).
async function until(check, what) {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > TIMEOUT_MS) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const alice = await login(aliceName);
const bob = await login(bobName);
const { room_id } = await alice.createRoom({ preset: "public_chat" });
await bob.joinRoom(room_id);

const prepared = new Promise((resolve, reject) => {
  alice.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
    if (state === "PREPARED") resolve();
    if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
  });
});
await alice.startClient({ initialSyncLimit: 20, threadSupport: true });
await prepared;
const room = () => alice.getRoom(room_id);
const counts = () => [room()?.getUnreadNotificationCount(Total), room()?.getUnreadNotificationCount(Highlight)];
const seen = {};

await bob.sendTextMessage(room_id, "one");
const mention = await bob.sendMessage(room_id, {
  msgtype: "m.text",
  body: `${aliceName}: two`,
  "m.mentions": { user_ids: [alice.getUserId()] },
});
await until(() => counts()[0] === 2 && counts()[1] === 1, "2 unread, 1 highlight");
seen.before_receipt = counts();

await until(() => room()?.findEventById(mention.event_id), "the mention in the timeline");
await alice.sendReadReceipt(room().findEventById(mention.event_id));
await until(() => counts()[0] === 0 && counts()[1] === 0, "counts back to 0 after the receipt");
seen.after_receipt = counts();

// Threads ("Threaded read receipts"): Bob starts a thread; its reply counts in
// the thread, not in the main timeline; Alice's threaded receipt on the reply
// (the SDK sends thread_id for an event in a thread) resets that thread only.
const root = await bob.sendTextMessage(room_id, "a thread root");
const reply = await bob.sendMessage(room_id, {
  msgtype: "m.text",
  body: "in the thread",
  "m.relates_to": { rel_type: "m.thread", event_id: root.event_id },
});
const threadCounts = () => [
  room()?.getThreadUnreadNotificationCount(root.event_id, Total) ?? 0,
  room()?.getThreadUnreadNotificationCount(root.event_id, Highlight) ?? 0,
];
await until(() => threadCounts()[0] === 1, "1 unread in the thread");
seen.thread_before = threadCounts();
const threadReply = () => room()?.getThread(root.event_id)?.findEventById(reply.event_id);
await until(() => threadReply(), "the thread reply in the client's thread");
await alice.sendReadReceipt(threadReply());
await until(() => threadCounts()[0] === 0, "the thread's count back to 0");
seen.thread_after = threadCounts();
// The root is in the main timeline, still unread there.
seen.main_after_thread_receipt = room()?.getRoomUnreadNotificationCount?.(Total) ?? null;

console.log("RESULT " + JSON.stringify(seen));
alice.stopClient();
process.exit(0);
