// matrix-js-sdk against a running Ranvier: log in, start the sync loop,
// create a room, send a message and see it come back through /sync.
// Usage: node chat.mjs BASE_URL USER PASSWORD
// Prints one line `RESULT {"room_id", "event_id", "body", "room_name"}` and exits 0, or exits 1.
import * as sdk from "matrix-js-sdk";

const [baseUrl, user, password] = process.argv.slice(2);
const TIMEOUT_MS = 20000;

function withTimeout(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS)),
  ]);
}

// What Element does before showing its login form: validate the homeserver. It fails
// (ERROR_UNSUPPORTED_HOMESERVER_SPEC_VERSION) unless /versions lists one of the
// releases this SDK supports (v1.1 … v1.13 in js-sdk 43).
const discovered = await sdk.AutoDiscovery.fromDiscoveryConfig({ "m.homeserver": { base_url: baseUrl } });
const homeserver = discovered["m.homeserver"];
if (homeserver.state !== sdk.AutoDiscovery.SUCCESS) {
  console.error(`autodiscovery failed: ${homeserver.state} ${homeserver.error}`);
  process.exit(1);
}

const client = sdk.createClient({ baseUrl });
const login = await client.loginRequest({
  type: "m.login.password",
  identifier: { type: "m.id.user", user },
  password,
});
const authed = sdk.createClient({
  baseUrl,
  accessToken: login.access_token,
  userId: login.user_id,
  deviceId: login.device_id,
});

const prepared = new Promise((resolve, reject) => {
  authed.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
    if (state === "PREPARED") resolve();
    if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
  });
});
await authed.startClient({ initialSyncLimit: 10 });
await withTimeout(prepared, "first sync");

const { room_id } = await authed.createRoom({ name: "js-sdk room", preset: "private_chat" });
const body = `hello from matrix-js-sdk ${Date.now()}`;
// Resolves when the message arrives from the server's /sync (not the local echo).
const synced = new Promise((resolve) => {
  authed.on(sdk.ClientEvent.Event, (event) => {
    if (event.getRoomId() === room_id && event.getType() === "m.room.message"
        && event.getContent().body === body && event.getId().startsWith("$")) {
      resolve(event.getId());
    }
  });
});
const sent = await authed.sendTextMessage(room_id, body);
const syncedId = await withTimeout(synced, "message via /sync");
if (syncedId !== sent.event_id) {
  console.error(`sent ${sent.event_id} but synced ${syncedId}`);
  process.exit(1);
}
const room = authed.getRoom(room_id);
console.log("RESULT " + JSON.stringify({ room_id, event_id: syncedId, body, room_name: room?.name ?? null }));
authed.stopClient();
process.exit(0);
