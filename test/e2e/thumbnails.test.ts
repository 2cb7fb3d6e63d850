import { crc32, deflateSync } from "node:zlib";
import { Code } from "@connectrpc/connect";
import sharp from "sharp";
import t from "tap";
import { Thumbnail_Source, Thumbnail_State, Video_State } from "../../gen/video/v1/video_pb.js";
import { fixture, image, removeFixtures } from "../support/media.js";
import { expectCode, expectRestError } from "../support/server.js";
import { contentMessages, eventually, startUploadServer } from "../support/uploads.js";

// The thumbnail RPCs over gRPC and REST on the embedded stores: custom
// images (each format, metadata stripped, size and type and pixel limits),
// generated ones on demand, deletion, and the default through UpdateVideo's
// mask; URLs are signed GETs that serve the stored variant (CONTRACT.md §1b).

t.teardown(removeFixtures);

const MAX = 256 * 1024;
const h = await startUploadServer(t, { kind: "filesystem", env: { THUMBNAIL_CONCURRENCY: "2", THUMBNAIL_SIZES: "320x180,160x90", THUMBNAIL_FORMATS: "webp,jpeg", THUMBNAIL_MAX_BYTES: String(MAX) } });
const { grpc } = h.s.clients;
const rest = h.s.clients.rest;

/** A PNG whose header claims 100000x100000 pixels (a decompression bomb's shape) around a tiny IDAT. */
function pngBomb(): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(100_000, 0);
  ihdr.writeUInt32BE(100_000, 4);
  ihdr.writeUInt8(8, 8);
  ihdr.writeUInt8(2, 9);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(Buffer.alloc(300_001))), chunk("IEND", Buffer.alloc(0))]);
}

const TYPES = { jpeg: "image/jpeg", png: "image/png", webp: "image/webp" } as const;

t.test("a custom JPEG, PNG or WebP becomes a READY uploaded thumbnail, over gRPC and over REST with the raw body", async (t) => {
  const v = await h.newVideo("custom thumbnails");
  for (const format of ["jpeg", "png", "webp"] as const) {
    const data = await image(format, 640, 360);
    const viaGrpc = await grpc.createThumbnail({ videoId: v.id, image: { contentType: TYPES[format], data } });
    t.equal(viaGrpc.source, Thumbnail_Source.UPLOADED, `${format}: uploaded`);
    t.equal(viaGrpc.state, Thumbnail_State.READY);
    t.same(viaGrpc.variants.map((x) => `${x.width}x${x.height}.${x.format}`), ["320x180.webp", "320x180.jpeg", "160x90.webp", "160x90.jpeg"], `${format}: every size and format`);
    const res = await rest("POST", `/videos/${v.id}/thumbnails`, { body: data, headers: { "content-type": TYPES[format] } });
    t.equal(res.status, 200, `${format} over REST: ${res.text.slice(0, 200)}`);
    t.equal(res.json.state, "STATE_READY");
    const got = await fetch(res.json.variants[1].url);
    t.equal(got.status, 200, "the signed URL serves the variant");
    t.equal(got.headers.get("content-type"), "image/jpeg");
    t.equal((await sharp(Buffer.from(await got.arrayBuffer())).metadata()).width, 320);
  }
  const after = await grpc.getVideo({ id: v.id });
  t.equal(after.thumbnails.length, 6, "all six recorded on the video");
  t.ok(after.thumbnails.every((x) => x.url.startsWith(h.s.baseUrl + "/_objects/videos/")), "GetVideo signs every READY thumbnail's URL");
});

t.test("a JPEG's EXIF (GPS included) is in no stored variant", async (t) => {
  const v = await h.newVideo("exif");
  const withGps = await sharp(await image("jpeg", 640, 360))
    .withExif({ IFD0: { Make: "TestCam" }, IFD3: { GPSLatitudeRef: "N", GPSLatitude: "51/1 30/1 0/1" } })
    .jpeg()
    .toBuffer();
  t.ok((await sharp(withGps).metadata()).exif, "the upload carries EXIF");
  const th = await grpc.createThumbnail({ videoId: v.id, image: { contentType: "image/jpeg", data: withGps } });
  for (const x of th.variants) {
    const bytes = Buffer.from(await (await fetch(x.url)).arrayBuffer());
    const m = await sharp(bytes).metadata();
    t.notOk(m.exif, `${x.width}x${x.height}.${x.format}: no EXIF`);
    t.notOk(bytes.includes(Buffer.from("TestCam")), "no trace of the camera");
  }
});

t.test("bad images are refused with INVALID_ARGUMENT naming the field, over gRPC and REST; nothing is stored", async (t) => {
  const v = await h.newVideo("bad images");
  const jpeg = await image("jpeg", 640, 360);
  const cases: [string, { contentType: string; data: Uint8Array }, string][] = [
    ["too large", { contentType: "image/jpeg", data: Buffer.concat([jpeg, Buffer.alloc(MAX)]) }, "image.data"],
    ["wrong type", { contentType: "text/plain", data: jpeg }, "image.content_type"],
    ["bytes not of the declared type", { contentType: "image/png", data: jpeg }, "image.data"],
    ["a PNG decompression bomb", { contentType: "image/png", data: pngBomb() }, "image.data"],
    ["no image", { contentType: "image/png", data: Buffer.alloc(0) }, "image"],
  ];
  for (const [what, img, field] of cases) {
    await expectCode(t, grpc.createThumbnail({ videoId: v.id, image: img }), Code.InvalidArgument, [field], what);
    const res = await rest("POST", `/videos/${v.id}/thumbnails`, { body: img.data, headers: { "content-type": img.contentType } });
    if (what === "too large") expectRestError(t, res, 413, "INVALID_ARGUMENT", undefined, what);
    else expectRestError(t, res, 400, "INVALID_ARGUMENT", [field], what);
  }
  await expectCode(t, grpc.createThumbnail({ videoId: "nope", image: { contentType: "image/jpeg", data: jpeg } }), Code.InvalidArgument, ["video_id"]);
  await expectCode(t, grpc.createThumbnail({ videoId: "01a23afe-1425-74a7-92e6-b38dacd9f69f", image: { contentType: "image/jpeg", data: jpeg } }), Code.NotFound);
  t.same((await grpc.getVideo({ id: v.id })).thumbnails, [], "no thumbnail recorded");
  t.same(await h.objectKeys(`videos/${v.id}/`), [], "no object stored");
});

t.test("GenerateThumbnails returns PENDING thumbnails that a job renders; DeleteThumbnail removes one and its objects; the default moves through the mask", async (t) => {
  const v = await h.newVideo("generate");
  await expectCode(t, grpc.generateThumbnails({ videoId: v.id }), Code.FailedPrecondition, undefined, "no upload yet");
  await grpc.uploadVideoContent(contentMessages({ id: v.id, contentType: "video/mp4" }, await fixture("one-second")));
  await expectCode(t, grpc.generateThumbnails({ videoId: v.id, timeOffsets: [{ seconds: -1n }] }), Code.InvalidArgument, ["time_offsets[0]"]);
  expectRestError(t, await rest("POST", `/videos/${v.id}/thumbnails:generate`, { json: { timeOffsets: ["90000s"] } }), 400, "INVALID_ARGUMENT", ["time_offsets[0]"]);
  const res = await rest("POST", `/videos/${v.id}/thumbnails:generate`, { json: { timeOffsets: ["0.5s"] } });
  t.equal(res.status, 200, res.text.slice(0, 200));
  t.equal(res.json.thumbnails[0].state, "STATE_PENDING");
  t.equal(res.json.thumbnails[0].timeOffset, "0.500s");
  const id = res.json.thumbnails[0].id as string;
  const ready = (await eventually(async () => {
    const got = await grpc.getVideo({ id: v.id });
    const x = got.thumbnails.find((th) => th.id === id);
    return x?.state === Thumbnail_State.READY && got.defaultThumbnailId ? got : undefined;
  }, "the requested thumbnail", 60_000))!;
  const other = ready.thumbnails.find((x) => x.id !== id)!.id;
  t.equal(ready.thumbnails.length, 4, "three from the upload, one asked for");
  t.not(ready.defaultThumbnailId, id, "the upload's middle one is the default");

  const chosen = await grpc.updateVideo({ video: { id: v.id, defaultThumbnailId: id }, updateMask: { paths: ["default_thumbnail_id"] } });
  t.equal(chosen.defaultThumbnailId, id, "the owner's choice");
  t.equal(chosen.title, "generate", "nothing else changed");
  await expectCode(t, grpc.updateVideo({ video: { id: v.id, defaultThumbnailId: "01a23afe-1425-74a7-92e6-b38dacd9f69f" }, updateMask: { paths: ["default_thumbnail_id"] } }), Code.InvalidArgument, ["video.default_thumbnail_id"]);
  const patched = await rest("PATCH", `/videos/${v.id}`, { json: { defaultThumbnailId: other } });
  t.equal(patched.json.defaultThumbnailId, other, "REST PATCH sets it too");

  const keys = (await grpc.getVideo({ id: v.id })).thumbnails.find((x) => x.id === id)!.variants.length;
  t.equal(keys, 4);
  expectRestError(t, await rest("DELETE", `/videos/${v.id}/thumbnails/not-an-id`), 400, "INVALID_ARGUMENT", ["thumbnail_id"]);
  const del = await rest("DELETE", `/videos/${v.id}/thumbnails/${other}`);
  t.equal(del.status, 200);
  await grpc.deleteThumbnail({ videoId: v.id, thumbnailId: id });
  await expectCode(t, grpc.deleteThumbnail({ videoId: v.id, thumbnailId: id }), Code.NotFound, undefined, "deleted twice");
  const left = await grpc.getVideo({ id: v.id });
  t.equal(left.thumbnails.length, 2);
  t.equal(left.defaultThumbnailId, "", "the deleted default is cleared");
  await h.drainJanitor();
  const stored = await h.objectKeys(`videos/${v.id}/thumbnails/`);
  t.equal(stored.length, 8, "only the two remaining thumbnails' objects are left");
  t.notOk(stored.some((k) => k.includes(id)), "the deleted one's objects are gone");

  await grpc.deleteVideo({ id: v.id });
  await h.drainJanitor();
  t.same(await h.objectKeys(`videos/${v.id}/`), [], "deleting the video removes its thumbnails' objects too");
  t.equal(ready.state, Video_State.UPLOADED);
});
