// matrix-js-sdk with thread support against a running Ranvier: list a room's
// threads (GET /threads), see a thread's replies, see an edited message shown
// with its replacement content (applied from the bundled m.replace), and send a
// thread reply of its own that comes back through /sync in the thread, and a
// reaction aggregated under the message it reacts to.
// Usage: node threads.mjs BASE_URL USER PASSWORD ROOM_ID ROOT_ID EDITED_ID
// Prints one line `RESULT {...}` and exits 0, or exits 1.
import * as sdk from "matrix-js-sdk";

const [baseUrl, user, password, roomId, rootId, editedId] = process.argv.slice(2);
const TIMEOUT_MS = 20000;

function withTimeout(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS)),
  ]);
}

const login = await sdk.createClient({ baseUrl }).loginRequest({
  type: "m.login.password",
  identifier: { type: "m.id.user", user },
  password,
});
const client = sdk.createClient({
  baseUrl,
  accessToken: login.access_token,
  userId: login.user_id,
  deviceId: login.device_id,
});
const prepared = new Promise((resolve, reject) => {
  client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
    if (state === "PREPARED") resolve();
    if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
  });
});
await client.startClient({ initialSyncLimit: 30, threadSupport: true });
await withTimeout(prepared, "first sync");

const room = client.getRoom(roomId);
if (!room) {
  console.error(`room ${roomId} not in the client's store`);
  process.exit(1);
}
await withTimeout(room.fetchRoomThreads(), "thread list");
const thread = room.getThread(rootId);
await withTimeout(thread?.fetchRootEvent?.() ?? Promise.resolve(), "thread root");
const edited = room.findEventById(editedId) ?? thread?.findEventById(editedId);
const relations = await client.relations(roomId, rootId, "m.thread");

const body = `js-sdk thread reply ${Date.now()}`;
const synced = new Promise((resolve) => {
  client.on(sdk.ClientEvent.Event, (event) => {
    if (event.getRoomId() === roomId && event.getContent().body === body
        && event.getId().startsWith("$")) {
      resolve(event);
    }
  });
});
const sent = await client.sendMessage(roomId, rootId, { msgtype: "m.text", body });
const echoed = await withTimeout(synced, "thread reply via /sync");
// The thread takes the reply in once the sync that carried it is processed.
// Its local echo (a pending event, `status` set) is replaced by the synced one
// only then; counted before that, the thread would hold the reply twice. And
// the thread fetches its earlier replies (GET /relations) in the background
// after the thread list made it: on a busy machine that may end after the
// reply came back (seen once in a clean-clone run), so wait for that too.
const settled = () =>
  thread?.initialEventsFetched === true
  && thread?.replyToEvent?.getId() === echoed.getId()
  && (thread?.events ?? []).every((event) => event.status === null);
for (let i = 0; i < 50 && !settled(); i++) {
  await new Promise((resolve) => setTimeout(resolve, 100));
}

// Bob's reaction to the root, as Element shows it: the client's aggregation of
// m.annotation relations by key.
const annotations = room.relations
  .getChildEventsForEvent(rootId, "m.annotation", "m.reaction")
  ?.getSortedAnnotationsByKey() ?? [];

console.log("RESULT " + JSON.stringify({
  server_side_threads: sdk.FeatureSupport[sdk.Thread.hasServerSideSupport],
  server_side_list: sdk.FeatureSupport[sdk.Thread.hasServerSideListSupport],
  threads: room.getThreads().map((t) => t.id),
  // The replies the client holds in the thread (Thread.length mixes the
  // server's count with local bookkeeping and is briefly off by one).
  thread_length: (thread?.events ?? []).filter((e) => e.getId() !== rootId).length,
  latest_reply: thread?.replyToEvent?.getId() ?? null,
  relations: relations.events.map((e) => e.getId()),
  edited_body: edited?.getContent().body ?? null,
  edited_replaced: edited?.replacingEventId() ?? null,
  sent: sent.event_id,
  echoed: echoed.getId(),
  echoed_thread: echoed.threadRootId ?? null,
  reactions: annotations.map(([key, events]) => [key, events.size]),
  thread_events: (thread?.events ?? []).map((e) => [e.getId(), e.getContent().body ?? null]),
}));
client.stopClient();
process.exit(0);
