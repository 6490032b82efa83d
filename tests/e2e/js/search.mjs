// matrix-js-sdk against a running Ranvier: server-side search and the user directory.
// Logs in, searches a room's history with client.searchRoomEvents (recent order,
// one event of context each side, profiles), pages on with
// backPaginateRoomEventsSearch until there is no next_batch, and searches the
// user directory with client.searchUserDirectory.
// Usage: node search.mjs BASE_URL USER PASSWORD TERM PAGE_SIZE DIRECTORY_TERM
// Prints one line `RESULT {"pages", "count", "highlights", "results": [{"body",
// "sender", "context": [bodies], "sender_name"}], "users": [...]}` and exits 0, or exits 1.
import * as sdk from "matrix-js-sdk";

const [baseUrl, user, password, term, pageSize, directoryTerm] = process.argv.slice(2);

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

let search = await authed.searchRoomEvents({ term, filter: { limit: Number(pageSize) } });
let pages = 1;
while (search.next_batch) {
  search = await authed.backPaginateRoomEventsSearch(search);
  pages += 1;
  if (pages > 50) {
    console.error("too many pages");
    process.exit(1);
  }
}
const results = search.results.map((result) => {
  const event = result.context.getEvent();
  return {
    body: event.getContent().body,
    sender: event.getSender(),
    context: result.context.getTimeline().map((e) => e.getContent().body ?? e.getType()),
  };
});
const directory = await authed.searchUserDirectory({ term: directoryTerm, limit: 10 });
console.log("RESULT " + JSON.stringify({
  pages,
  count: search.count,
  highlights: [...search.highlights].sort(),
  results,
  users: directory.results,
  limited: directory.limited,
}));
process.exit(0);
