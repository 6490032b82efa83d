// matrix-js-sdk against a running Ranvier: a room upgrade followed by a second member.
// ALICE creates a public room, BOB joins; ALICE upgrades it with client.upgradeRoom
// (POST /rooms/{roomId}/upgrade); BOB sees the tombstone through /sync, joins the
// replacement room via the tombstone sender's server, and asks the SDK for the
// room's upgrade history (which checks the create event's predecessor against the
// tombstone).
// Usage: node upgrade.mjs BASE_URL ALICE BOB PASSWORD
// Prints one line `RESULT {...}` and exits 0, or exits 1.
import * as sdk from "matrix-js-sdk";

const [baseUrl, aliceName, bobName, password] = process.argv.slice(2);
const TIMEOUT_MS = 20000;

function withTimeout(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS)),
  ]);
}

async function started(user) {
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
  await withTimeout(prepared, `${user}'s first sync`);
  return client;
}

// Resolves once `predicate()` holds, checked after every event the client syncs.
function until(client, predicate, what) {
  if (predicate()) return Promise.resolve();
  return withTimeout(new Promise((resolve) => {
    const check = () => {
      if (predicate()) {
        client.off(sdk.ClientEvent.Event, check);
        resolve();
      }
    };
    client.on(sdk.ClientEvent.Event, check);
  }), what);
}

const joined = (client, roomId) => client.getRoom(roomId)?.getMyMembership() === "join";

const alice = await started(aliceName);
const bob = await started(bobName);

const { room_id: oldRoom } = await alice.createRoom({
  name: "js-sdk upgrade", preset: "public_chat", room_version: "10",
});
await bob.joinRoom(oldRoom);
await until(bob, () => joined(bob, oldRoom), "bob in the old room");

const { replacement_room: newRoom } = await alice.upgradeRoom(oldRoom, "12");

const tombstoneOf = () => bob.getRoom(oldRoom)?.currentState.getStateEvents("m.room.tombstone", "");
await until(bob, () => tombstoneOf() !== null && tombstoneOf() !== undefined, "the tombstone");
const tombstone = tombstoneOf();
const via = tombstone.getSender().split(":").slice(1).join(":");
await bob.joinRoom(tombstone.getContent().replacement_room, { viaServers: [via] });
await until(bob, () => joined(bob, newRoom) && bob.getRoom(newRoom).name === "js-sdk upgrade",
  "bob in the new room");

const predecessor = bob.getRoom(newRoom).findPredecessor();
const history = bob.getRoomUpgradeHistory(oldRoom, true).map((room) => room.roomId);
console.log("RESULT " + JSON.stringify({
  old_room: oldRoom,
  new_room: newRoom,
  tombstone_target: tombstone.getContent().replacement_room,
  predecessor_room: predecessor?.roomId ?? null,
  history,
  new_room_version: bob.getRoom(newRoom).getVersion(),
}));
alice.stopClient();
bob.stopClient();
process.exit(0);
