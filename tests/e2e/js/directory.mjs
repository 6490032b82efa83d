// matrix-js-sdk against a running Ranvier: publish rooms and find them in the
// public room directory (search term, room type filter), build a space with a
// sub-space and read its hierarchy page by page.
// Usage: node directory.mjs BASE_URL USER PASSWORD
// Prints one line `RESULT {...}` and exits 0, or exits 1.
import * as sdk from "matrix-js-sdk";

const [baseUrl, user, password] = process.argv.slice(2);

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

const tag = `js${Date.now()}`;
const { room_id: lobby } = await client.createRoom({
  name: `${tag} lobby`, topic: "for js-sdk", visibility: "public", preset: "public_chat",
});
const { room_id: space } = await client.createRoom({
  name: `${tag} space`, visibility: "public", preset: "public_chat",
  creation_content: { type: "m.space" },
});
const { room_id: subspace } = await client.createRoom({
  name: `${tag} sub-space`, preset: "public_chat", creation_content: { type: "m.space" },
});
const { room_id: leaf } = await client.createRoom({ name: `${tag} leaf`, preset: "public_chat" });
const server = login.user_id.split(":").slice(1).join(":");
await client.sendStateEvent(space, "m.space.child", { via: [server], order: "a" }, subspace);
await client.sendStateEvent(space, "m.space.child", { via: [server], order: "b" }, lobby);
await client.sendStateEvent(subspace, "m.space.child", { via: [server] }, leaf);

const searched = await client.publicRooms({ filter: { generic_search_term: tag } });
const spacesOnly = await client.publicRooms({ filter: { generic_search_term: tag, room_types: ["m.space"] } });
const plainOnly = await client.publicRooms({ filter: { generic_search_term: tag, room_types: [null] } });
const anonymous = await sdk.createClient({ baseUrl }).publicRooms({ limit: 1 });

const hierarchy = [];
let from;
do {
  const page = await client.getRoomHierarchy(space, 2, undefined, false, from);
  hierarchy.push(...page.rooms.map((room) => room.room_id));
  from = page.next_batch;
} while (from);
const shallow = await client.getRoomHierarchy(space, 10, 1);

console.log("RESULT " + JSON.stringify({
  lobby, space, subspace, leaf,
  searched: searched.chunk.map((room) => room.room_id).sort(),
  searched_names: searched.chunk.map((room) => room.name).sort(),
  spaces_only: spacesOnly.chunk.map((room) => room.room_id),
  plain_only: plainOnly.chunk.map((room) => room.room_id),
  anonymous_count: anonymous.chunk.length,
  hierarchy,
  shallow: shallow.rooms.map((room) => room.room_id),
}));
process.exit(0);
