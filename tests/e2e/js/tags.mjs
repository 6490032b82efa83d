// matrix-js-sdk against a running Ranvier: room tags (setRoomTag, getRoomTags,
// deleteRoomTag; the m.tag room account data through /sync) and the ignore
// list (setIgnoredUsers; m.ignored_user_list through /sync).
// Usage: node tags.mjs BASE_URL USER PASSWORD IGNORED_USER_ID
// Prints one line `RESULT {...}` and exits 0, or exits 1.
import * as sdk from "matrix-js-sdk";

const [baseUrl, user, password, ignoredUserId] = process.argv.slice(2);
const TIMEOUT_MS = 20000;

function withTimeout(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS)),
  ]);
}

// Resolves once `check()` holds, re-checked after every sync.
function whenSynced(client, check, what) {
  return withTimeout(new Promise((resolve) => {
    if (check()) return resolve();
    const onSync = () => {
      if (check()) {
        client.removeListener(sdk.ClientEvent.Sync, onSync);
        resolve();
      }
    };
    client.on(sdk.ClientEvent.Sync, onSync);
  }), what);
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
await client.startClient({ initialSyncLimit: 10 });
await withTimeout(prepared, "first sync");

const { room_id } = await client.createRoom({ name: "tagged", preset: "private_chat" });
await whenSynced(client, () => client.getRoom(room_id) !== null, "the room");

await client.setRoomTag(room_id, "m.favourite", { order: 0.5 });
await client.setRoomTag(room_id, "u.work", {});
await whenSynced(client, () => "u.work" in (client.getRoom(room_id)?.tags ?? {}), "tags via /sync");
const syncedTags = client.getRoom(room_id).tags;
const fetched = (await client.getRoomTags(room_id)).tags;

await client.deleteRoomTag(room_id, "u.work");
await whenSynced(client, () => !("u.work" in (client.getRoom(room_id)?.tags ?? {})), "tag removal");
const afterDelete = client.getRoom(room_id).tags;

await client.setIgnoredUsers([ignoredUserId]);
await whenSynced(client, () => client.getIgnoredUsers().includes(ignoredUserId), "ignore list");
const ignored = client.getIgnoredUsers();

console.log("RESULT " + JSON.stringify({ syncedTags, fetched, afterDelete, ignored }));
client.stopClient();
process.exit(0);
