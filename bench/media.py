"""Scenario 11 (media): the content repository, side by side.

On a fresh server of each kind, one after the other (so one server's upload
burst does not share the CPU or skew the other's memory figures):

* upload throughput of a 10 MiB file (``POST /_matrix/media/v3/upload``);
* download latency of a 1 MiB file (authenticated ``/_matrix/client/v1/media/download``);
* thumbnail latency for a *fresh* 2000×1500 JPEG: each sample uploads a new
  picture, then asks for its 320×240 ``scale`` thumbnail. Synapse makes all
  its standard thumbnails before answering the upload, Ranvier the first
  (320×240) before answering and the others just after, so the thumbnail
  request reads a file on both; "upload + first thumbnail" is reported too;
* peak RSS of the server during 20 concurrent 10 MiB uploads (sampled every
  20 ms; uploads are streamed to disk, so this stays near the idle figure).
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from dataclasses import dataclass

import aiohttp
from yarl import URL

from bench.client import REQUEST_TIMEOUT_S, BenchError, NotImplementedYet, User
from bench.scenarios import MIB, Outcome, Scenario, ServerContext, latency_figures, percentile

UPLOAD = "/_matrix/media/v3/upload"
MEDIA = "/_matrix/client/v1/media"
RSS_SAMPLE_S = 0.02


@dataclass
class MediaState:
    user: User
    small_uri: str  # the 1 MiB file downloads read


def _jpeg(seed: int, size: tuple[int, int] = (2000, 1500)) -> bytes:
    """A 2000×1500 JPEG that no earlier sample used (noise, so no two are alike)."""
    from PIL import Image

    noise = Image.frombytes(
        "RGB", (size[0] // 10, size[1] // 10), os.urandom(size[0] * size[1] * 3 // 100)
    )
    picture = noise.resize(size)
    picture.putpixel((seed % size[0], 0), (seed % 256, 0, 0))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=90)
    return out.getvalue()


async def _upload(ctx: ServerContext, user: User, data: bytes, content_type: str) -> str:
    url = URL(ctx.client.base_url + UPLOAD).update_query(filename="bench.bin")
    headers = {"Authorization": f"Bearer {user.access_token}", "Content-Type": content_type}
    async with ctx.client.session.post(
        url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    ) as response:
        body = await response.json(content_type=None)
        if response.status in (404, 405) and body.get("errcode") == "M_UNRECOGNIZED":
            raise NotImplementedYet("POST /media/v3/upload")
        if response.status != 200:
            raise BenchError(f"upload answered {response.status}: {str(body)[:200]}")
        uri: str = body["content_uri"]
        return uri


async def _get(
    ctx: ServerContext, user: User, path: str, params: dict[str, str] | None = None
) -> int:
    """GET a media path; the number of bytes received."""
    url = URL(ctx.client.base_url + path, encoded=True)
    if params:
        url = url.update_query(params)
    headers = {"Authorization": f"Bearer {user.access_token}"}
    async with ctx.client.session.get(
        url, headers=headers, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    ) as response:
        data = await response.read()
        if response.status in (404, 405) and b"M_UNRECOGNIZED" in data:
            raise NotImplementedYet(f"GET {path.split('/localhost')[0]}")
        if response.status != 200:
            raise BenchError(f"GET {path} answered {response.status}: {data[:200]!r}")
        return len(data)


def _path(kind: str, uri: str) -> str:
    return f"{MEDIA}/{kind}/{uri.removeprefix('mxc://')}"


class Media(Scenario):
    key = "media"
    title = "11 media"

    def repeats(self, sizes: object) -> int:
        return 1

    async def setup(self, ctx: ServerContext) -> MediaState:
        user = await ctx.new_user("m")
        small_uri = await _upload(ctx, user, os.urandom(MIB), "application/octet-stream")
        return MediaState(user, small_uri)

    async def measure(self, ctx: ServerContext, state: MediaState, repeat: int) -> Outcome:
        sizes = ctx.sizes
        outcome = Outcome()
        await self._upload_throughput(ctx, state, sizes.media_uploads, outcome)
        await self._downloads(ctx, state, sizes.media_downloads, outcome)
        await self._thumbnails(ctx, state, sizes.media_thumbnails, outcome)
        await self._concurrent_uploads(ctx, state, sizes.media_concurrent_uploads, outcome)
        return outcome

    async def _upload_throughput(
        self, ctx: ServerContext, state: MediaState, count: int, outcome: Outcome
    ) -> None:
        rates = []
        for _ in range(count):
            data = os.urandom(10 * MIB)
            started = time.perf_counter()
            await _upload(ctx, state.user, data, "application/octet-stream")
            rates.append(10 / (time.perf_counter() - started))
        outcome.figures["10 MiB upload, median (MiB/s)"] = percentile(rates, 0.5)
        outcome.samples["10 MiB upload (MiB/s)"] = rates

    async def _downloads(
        self, ctx: ServerContext, state: MediaState, count: int, outcome: Outcome
    ) -> None:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            received = await _get(ctx, state.user, _path("download", state.small_uri))
            samples.append((time.perf_counter() - started) * 1000)
            if received != MIB:
                raise BenchError(f"downloaded {received} bytes of 1 MiB")
        outcome.figures |= latency_figures("1 MiB download", samples)
        outcome.samples["1 MiB download (ms)"] = samples

    async def _thumbnails(
        self, ctx: ServerContext, state: MediaState, count: int, outcome: Outcome
    ) -> None:
        thumbnail_ms, both_ms = [], []
        for sample in range(count):
            picture = await asyncio.to_thread(_jpeg, sample)
            started = time.perf_counter()
            uri = await _upload(ctx, state.user, picture, "image/jpeg")
            uploaded = time.perf_counter()
            await _get(
                ctx,
                state.user,
                _path("thumbnail", uri),
                {"width": "320", "height": "240", "method": "scale"},
            )
            done = time.perf_counter()
            thumbnail_ms.append((done - uploaded) * 1000)
            both_ms.append((done - started) * 1000)
        outcome.figures["fresh 2000×1500 JPEG thumbnail p50 (ms)"] = percentile(thumbnail_ms, 0.5)
        outcome.figures["upload + first thumbnail p50 (ms)"] = percentile(both_ms, 0.5)
        outcome.samples["fresh JPEG thumbnail (ms)"] = thumbnail_ms

    async def _concurrent_uploads(
        self, ctx: ServerContext, state: MediaState, count: int, outcome: Outcome
    ) -> None:
        payloads = [os.urandom(10 * MIB) for _ in range(count)]
        before = ctx.server.rss_bytes()
        peak = before
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, ctx.server.rss_bytes())
                await asyncio.sleep(RSS_SAMPLE_S)

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        try:
            await asyncio.gather(
                *(_upload(ctx, state.user, data, "application/octet-stream") for data in payloads)
            )
        finally:
            done.set()
            await sampler
        elapsed = time.perf_counter() - started
        outcome.figures[f"RSS before {count} concurrent 10 MiB uploads (MiB)"] = before / MIB
        outcome.figures["peak RSS during them (MiB)"] = peak / MIB
        outcome.figures[f"{count} × 10 MiB concurrent (MiB/s)"] = count * 10 / elapsed


MEDIA_SCENARIO = Media()
