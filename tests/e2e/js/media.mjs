// matrix-js-sdk against a running Ranvier: upload an image, then download it and
// a thumbnail through authenticated media (/_matrix/client/v1/media, v1.11),
// as Element does. Usage: node media.mjs BASE_URL USER PASSWORD IMAGE_PATH THUMB_OUT
// Prints one line `RESULT {...}` and exits 0, or exits 1.
import { readFile, writeFile } from "node:fs/promises";
import * as sdk from "matrix-js-sdk";

const [baseUrl, user, password, imagePath, thumbOut] = process.argv.slice(2);

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

const config = await authed.getMediaConfig(true);
const image = await readFile(imagePath);
const { content_uri } = await authed.uploadContent(image, { name: "js image.png", type: "image/png" });

const auth = { headers: { Authorization: `Bearer ${login.access_token}` } };
const downloadUrl = authed.mxcUrlToHttp(content_uri, undefined, undefined, undefined, false, true, true);
const download = await fetch(downloadUrl, auth);
const downloaded = Buffer.from(await download.arrayBuffer());
const unauthenticated = await fetch(downloadUrl);

const thumbUrl = authed.mxcUrlToHttp(content_uri, 96, 96, "crop", false, true, true);
const thumb = await fetch(thumbUrl, auth);
await writeFile(thumbOut, Buffer.from(await thumb.arrayBuffer()));

console.log("RESULT " + JSON.stringify({
  upload_size: config["m.upload.size"],
  content_uri,
  download_url: downloadUrl,
  download_status: download.status,
  download_same: downloaded.equals(image),
  download_type: download.headers.get("content-type"),
  download_disposition: download.headers.get("content-disposition"),
  unauthenticated_status: unauthenticated.status,
  thumbnail_url: thumbUrl,
  thumbnail_status: thumb.status,
  thumbnail_type: thumb.headers.get("content-type"),
}));
process.exit(0);
