import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { mulberry32, pick } from "../../../sandbox/prng.ts";
import type { SnapshotEnvelope } from "../../../src/gateway/types.ts";
import { findVin, loadPrepared, type Prepared, prepareSnapshot, vinAt } from "../../../src/vehicles/prepared.ts";
import { encodeCursor, parseVehicleQuery, type VehicleQuery } from "../../../src/vehicles/query.ts";
import {
  redactVehicles,
  type Vehicle,
  VehicleListSchema,
  VehicleResponseSchema,
} from "../../../src/vehicles/schema.ts";
import { queryVehicles, serializeVehicle, serializeVehicles, vehiclesBody } from "../../../src/vehicles/snapshot.ts";
import { haversineM } from "../../../src/vehicles/spatial-index.ts";

const VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

/** Partner-shaped items: secrets, unknown fields, sloppy case, missing fields, some clustered. */
function partnerFleet(rnd: () => number, n: number): Record<string, unknown>[] {
  const items: Record<string, unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const vin = Array.from({ length: 17 }, () => pick(rnd, [...VIN_CHARS])).join("");
    const clustered = rnd() < 0.8;
    const item: Record<string, unknown> = {
      vin: rnd() < 0.1 ? vin.toLowerCase() : vin,
      numberPlate: `B-SN ${i}`,
      vehicleName: pick(rnd, ["MINI Cooper", "BMW i3", "Mercedes A-Class"]),
      position: clustered
        ? { latitude: 52.4 + rnd() * 0.25, longitude: 13.2 + rnd() * 0.4 }
        : { latitude: rnd() * 170 - 85, longitude: rnd() * 360 - 180 },
      fuelType: pick(rnd, ["GASOLINE", "DIESEL", "ELECTRIC", "electric", "Hybrid", null]),
      fuelLevel: rnd() < 0.9 ? Math.floor(rnd() * 101) : null,
      fuelCardPin: String(1000 + Math.floor(rnd() * 9000)),
      transmissionType: pick(rnd, ["GA", "GM", "ga", null]),
      numberOfSeats: pick(rnd, [2, 4, 5, 7, null]),
      charging: rnd() < 0.2,
      secretFleetNote: "do not serve",
    };
    // Exact ties in position, for the distance tie-break by VIN.
    if (i > 0 && rnd() < 0.03) item.position = { ...(items[i - 1] as { position: object }).position };
    items.push(item);
  }
  return items;
}

const FETCHED_AT = Date.UTC(2025, 0, 2, 3, 4, 5, 678);
const decoder = new TextDecoder();

async function prepared(vehicles: Vehicle[], fetchedAt = FETCHED_AT): Promise<{ env: SnapshotEnvelope; p: Prepared }> {
  const env = await prepareSnapshot(vehicles, { fetchedAt, dropped: 0 });
  return { env, p: loadPrepared(env) };
}

type Out = Vehicle & { distanceM?: number };

/** The reference: every filter by brute force over the array. */
function brute(vehicles: readonly Vehicle[], q: VehicleQuery): { vehicles: Out[]; total: number } {
  const matches: { veh: Vehicle; d: number }[] = [];
  for (const veh of vehicles) {
    const { latitude: lat, longitude: lon } = veh.position;
    if (q.bbox && !(lat >= q.bbox.minLat && lat <= q.bbox.maxLat && lon >= q.bbox.minLon && lon <= q.bbox.maxLon))
      continue;
    const d = q.near ? haversineM(q.near.lat, q.near.lon, lat, lon) : 0;
    if (q.near && d > q.near.radiusM) continue;
    if (q.fuelTypes && !(veh.fuelType !== undefined && q.fuelTypes.includes(veh.fuelType.toUpperCase()))) continue;
    if (q.minFuelLevel !== undefined && !(veh.fuelLevel !== undefined && veh.fuelLevel >= q.minFuelLevel)) continue;
    if (q.transmission && veh.transmissionType !== q.transmission) continue;
    if (q.seats && !(veh.numberOfSeats !== undefined && q.seats.includes(veh.numberOfSeats))) continue;
    matches.push({ veh, d });
  }
  if (q.near) matches.sort((a, b) => a.d - b.d || (a.veh.vin < b.veh.vin ? -1 : 1));
  else matches.sort((a, b) => (a.veh.vin < b.veh.vin ? -1 : 1));
  const out = matches.slice(0, q.limit).map((m) => (q.near ? { ...m.veh, distanceM: Math.round(m.d) } : m.veh));
  return { vehicles: out, total: matches.length };
}

/** The reference answer's JSON text, as `JSON.stringify` writes it. */
function bruteText(vehicles: readonly Vehicle[], q: VehicleQuery, stale = false): string {
  const want = brute(vehicles, q);
  return JSON.stringify({
    vehicles: want.vehicles,
    count: want.vehicles.length,
    total: want.total,
    fetchedAt: new Date(FETCHED_AT).toISOString(),
    stale,
  });
}

/** The answer as the route writes it, without `next` (compared with the reference). */
function answer(p: Prepared, q: VehicleQuery, stale = false): string {
  return decoder.decode(serializeVehicles(p, queryVehicles(p, q), { stale }));
}

const rnd = mulberry32(99);
const { vehicles: fleet } = redactVehicles(partnerFleet(rnd, 5000), 100_000);
const { env: fleetEnv, p: snapshot } = await prepared(fleet);
const MAX = 5000;

function randomQuery(): string {
  const parts: string[] = [];
  const r = rnd();
  if (r < 0.35) {
    const lat = 52.4 + rnd() * 0.3 - 0.02;
    const lon = 13.2 + rnd() * 0.45 - 0.02;
    const h = 10 ** (rnd() * 3 - 3.3); // ~0.0005 .. 0.5 degrees
    parts.push(`bbox=${lon},${lat},${lon + h * 1.5},${lat + h}`);
  } else if (r < 0.5) {
    parts.push(`bbox=${rnd() * 300 - 180},${rnd() * 100 - 90},180,90`);
  }
  if (rnd() < 0.45) {
    const anchor = pick(rnd, fleet).position;
    const lat = rnd() < 0.3 ? anchor.latitude : 52.4 + rnd() * 0.25;
    const lon = rnd() < 0.3 ? anchor.longitude : 13.2 + rnd() * 0.4;
    parts.push(`near=${lat},${lon}`);
    if (rnd() < 0.8) parts.push(`radius=${Math.ceil(10 ** (rnd() * 4.7))}`);
  }
  if (rnd() < 0.3) parts.push(`fuelType=${pick(rnd, ["electric", "GASOLINE,diesel", "hybrid", "HYDROGEN"])}`);
  if (rnd() < 0.3) parts.push(`minFuelLevel=${Math.floor(rnd() * 101)}`);
  if (rnd() < 0.3) parts.push(`transmission=${pick(rnd, ["GA", "GM", "automatic", "manual"])}`);
  if (rnd() < 0.3) parts.push(`seats=${pick(rnd, ["4", "2,7", "5,4", "3"])}`);
  if (rnd() < 0.4) parts.push(`limit=${1 + Math.floor(rnd() * 60)}`);
  return parts.join("&");
}

describe("the prepared snapshot against brute force (byte for byte)", () => {
  it("equals JSON.stringify of the brute-force answer for 1,500 random queries", () => {
    let withNear = 0;
    let empty = 0;
    let limited = 0;
    for (let i = 0; i < 1500; i++) {
      const qs = randomQuery();
      const q = parseVehicleQuery(qs, { maxLimit: MAX });
      const stale = i % 7 === 0;
      expect({ qs, text: answer(snapshot, q, stale) }).toEqual({ qs, text: bruteText(fleet, q, stale) });
      const want = brute(fleet, q);
      if (q.near) withNear++;
      if (want.total === 0) empty++;
      if (want.total > q.limit) limited++;
    }
    expect(withNear).toBeGreaterThan(400);
    expect(empty).toBeGreaterThan(50);
    expect(limited).toBeGreaterThan(50);
  }, 60_000);

  it("a large body streams in whole chunks with the same bytes, and leaves the snapshot's text as it was", async () => {
    const textBefore = snapshot.text.slice();
    const queries = [
      "limit=3",
      "limit=400",
      `bbox=13.2,52.4,13.6,52.65&limit=300`,
      "near=52.5,13.4&radius=2000&limit=40",
    ];
    for (const q of queries) {
      const query = parseVehicleQuery(q ? `?${q}` : "", { maxLimit: MAX });
      const result = queryVehicles(snapshot, query);
      const whole = serializeVehicles(snapshot, result, { stale: false, next: "/v1/vehicles?cursor=x" });
      for (const chunk of q === "limit=3" ? [1, 7] : [997, 4096, 65536]) {
        // No range long enough to go as a view: copies only.
        const body = vehiclesBody(
          snapshot,
          result,
          { stale: false, next: "/v1/vehicles?cursor=x" },
          chunk,
          chunk,
          Infinity,
        );
        expect(body).toBeInstanceOf(whole.length > chunk ? ReadableStream : Uint8Array);
        const pieces: Uint8Array[] = [];
        if (body instanceof ReadableStream) for await (const piece of body) pieces.push(piece);
        else pieces.push(body as Uint8Array);
        // Pieces of `chunk` bytes, the last one shorter, however many items and separators the
        // answer is made of (a filtered answer is thousands of small parts).
        expect(pieces.length).toBe(Math.ceil(whole.length / chunk));
        expect(pieces.slice(0, -1).every((p) => p.length === chunk)).toBe(true);
        const streamed = Buffer.concat(pieces);
        expect(streamed.length).toBe(whole.length);
        expect(Buffer.compare(streamed, whole)).toBe(0);
      }
      // At the default chunk size a small answer is one buffer.
      const small = vehiclesBody(snapshot, queryVehicles(snapshot, parseVehicleQuery("?limit=1", { maxLimit: MAX })), {
        stale: false,
      });
      expect(small).toBeInstanceOf(Uint8Array);
    }
    expect(Buffer.compare(snapshot.text, textBefore)).toBe(0);
  });

  it("an unfiltered page named by `keep` is one Blob per snapshot, answered again as it is, within the text's size", async () => {
    const opts = (keep: string) => ({ stale: false, next: "/v1/vehicles?cursor=x", keep });
    const page = (limit: number) => queryVehicles(snapshot, parseVehicleQuery(`?limit=${limit}`, { maxLimit: MAX }));
    const range = 1024;
    const first = vehiclesBody(snapshot, page(400), opts("fresh|limit=400"), 4096, Infinity, range);
    expect(first).toBeInstanceOf(Blob);
    expect(
      Buffer.compare(
        Buffer.from(await (first as Blob).arrayBuffer()),
        serializeVehicles(snapshot, page(400), opts("")),
      ),
    ).toBe(0);
    // The same key: the same Blob, not built again.
    expect(vehiclesBody(snapshot, page(400), opts("fresh|limit=400"), 4096, Infinity, range)).toBe(first);
    // Another key: another Blob, while the kept bodies stay within the snapshot's text size.
    const other = vehiclesBody(snapshot, page(399), opts("fresh|limit=399"), 4096, Infinity, range);
    expect(other).toBeInstanceOf(Blob);
    expect(other).not.toBe(first);
    // The whole fleet as one page (its text, a head and a tail) fits the budget on its own (another
    // snapshot of the same fleet, nothing kept for it yet)...
    const full = page(MAX);
    const other2 = loadPrepared(fleetEnv);
    const alone = vehiclesBody(
      other2,
      queryVehicles(other2, parseVehicleQuery(`?limit=${MAX}`, { maxLimit: MAX })),
      opts(`fresh|limit=${MAX}`),
      4096,
      Infinity,
      range,
    );
    expect(alone).toBeInstanceOf(Blob);
    expect((alone as Blob).size).toBeGreaterThan(other2.text.length);
    // ...but not beside the two pages kept already: streamed as before, not kept.
    const over = vehiclesBody(snapshot, full, opts(`fresh|limit=${MAX}`), 4096, Infinity, range);
    expect(over).toBeInstanceOf(ReadableStream);
    await (over as ReadableStream).cancel();
    // Without `keep` (or for a filtered answer) nothing is kept.
    const unkept = vehiclesBody(snapshot, page(400), { stale: false }, 4096, Infinity, range);
    expect(unkept).toBeInstanceOf(ReadableStream);
    await (unkept as ReadableStream).cancel();
  });

  it("a long range of the text streams as one view of it, between a copied head and tail", async () => {
    const query = parseVehicleQuery("?limit=400", { maxLimit: MAX });
    const result = queryVehicles(snapshot, query);
    const opts = { stale: false, next: "/v1/vehicles?cursor=x" };
    const whole = serializeVehicles(snapshot, result, opts);
    const range = whole.length - 200; // shorter than the items' range: it goes as a view
    for (const chunk of [7, 4096]) {
      const body = vehiclesBody(snapshot, result, opts, chunk, Infinity, range);
      expect(body).toBeInstanceOf(ReadableStream);
      const pieces: Uint8Array[] = [];
      for await (const piece of body as ReadableStream<Uint8Array>) pieces.push(piece);
      const views = pieces.filter((p) => p.buffer === snapshot.text.buffer);
      expect(views.length).toBe(1);
      expect(views[0]?.length).toBeGreaterThanOrEqual(range);
      // The head `{"vehicles":[` and the tail (count, total, fetchedAt, stale, next) are copies of at most `chunk` bytes.
      const copies = pieces.filter((p) => p.buffer !== snapshot.text.buffer);
      expect(copies.every((p) => p.length <= chunk)).toBe(true);
      expect(Buffer.compare(Buffer.concat(pieces), whole)).toBe(0);
    }
    // A filtered answer (thousands of small parts) has no range that long: copies only, whole chunks.
    const near = queryVehicles(snapshot, parseVehicleQuery("?near=52.5,13.4&radius=5000&limit=300", { maxLimit: MAX }));
    const nearWhole = serializeVehicles(snapshot, near, { stale: false });
    const body = vehiclesBody(snapshot, near, { stale: false }, 4096, 1024, 64 * 1024);
    const pieces: Uint8Array[] = [];
    for await (const piece of body as ReadableStream<Uint8Array>) pieces.push(piece);
    expect(pieces.some((p) => p.buffer === snapshot.text.buffer)).toBe(false);
    expect(pieces.length).toBe(Math.ceil(nearWhole.length / 4096));
    expect(Buffer.compare(Buffer.concat(pieces), nearWhole)).toBe(0);
  });

  it("with many large answers in flight, a range goes as views of a chunk each; as one view again once they end", async () => {
    const result = queryVehicles(snapshot, parseVehicleQuery("?limit=400", { maxLimit: MAX }));
    const whole = serializeVehicles(snapshot, result, { stale: false });
    const chunk = 4096;
    const range = whole.length - 200;
    const open = () =>
      vehiclesBody(snapshot, result, { stale: false }, chunk, Infinity, range) as ReadableStream<Uint8Array>;
    const piecesOf = async (body: ReadableStream<Uint8Array>) => {
      const pieces: Uint8Array[] = [];
      for await (const piece of body) pieces.push(piece);
      return pieces;
    };
    const viewsOf = (pieces: Uint8Array[]) => pieces.filter((p) => p.buffer === snapshot.text.buffer);
    expect(viewsOf(await piecesOf(open()))).toHaveLength(1);
    // 16 answers started and not read yet: the next one cuts its range into views of `chunk` bytes.
    const waiting = Array.from({ length: 16 }, open);
    const cut = await piecesOf(open());
    expect(viewsOf(cut).length).toBe(Math.ceil(viewsOf(cut).reduce((n, p) => n + p.length, 0) / chunk));
    expect(viewsOf(cut).every((p) => p.length <= chunk)).toBe(true);
    expect(Buffer.compare(Buffer.concat(cut), whole)).toBe(0);
    // Half read to the end, half cancelled by their readers: none counts any more.
    await Promise.all(waiting.map((body, k) => (k % 2 ? piecesOf(body) : body.cancel())));
    expect(viewsOf(await piecesOf(open()))).toHaveLength(1);
  });

  it("the unfiltered list is the stored text itself; a limit cuts it at an item boundary", () => {
    const full = answer(snapshot, { limit: MAX });
    expect(full).toBe(bruteText(fleet, { limit: MAX }));
    expect(full).toContain(decoder.decode(snapshot.text));
    expect(answer(snapshot, { limit: 10 })).toBe(bruteText(fleet, { limit: 10 }));
  });

  it("non-ASCII text (2-, 3- and 4-byte UTF-8) is cut at the right bytes", async () => {
    const names = ["Škoda Fabia", "Citroën ë-C4", "日産 リーフ", "Smart 🚗 EQ"];
    const list = redactVehicles(
      names.map((vehicleName, i) => ({
        vin: `WME4530421Y00000${i}`,
        vehicleName,
        position: { latitude: 52.5 + i / 100, longitude: 13.4 },
      })),
      10,
    ).vehicles;
    const { p } = await prepared(list);
    expect(answer(p, { limit: MAX })).toBe(bruteText(list, { limit: MAX }));
    // A page after the first VIN: items 1 and 2, cut by byte offsets past multi-byte characters.
    const page = JSON.parse(answer(p, { limit: 2, after: "WME4530421Y000000" })) as { vehicles: Vehicle[] };
    expect(page.vehicles).toEqual(list.slice(1, 3));
    for (let i = 0; i < list.length; i++) {
      const text = decoder.decode(serializeVehicle(p, i, { stale: false }));
      expect(JSON.parse(text).vehicle).toEqual(list[i]);
    }
  });

  it("an empty fleet answers an empty list", async () => {
    const { p } = await prepared([]);
    expect(answer(p, { limit: MAX })).toBe(bruteText([], { limit: MAX }));
    expect(answer(p, parseVehicleQuery("near=52.5,13.4", { maxLimit: MAX }))).toBe(
      bruteText([], parseVehicleQuery("near=52.5,13.4", { maxLimit: MAX })),
    );
  });

  it("near: the nearest `limit` by a bounded selection, ties by VIN, distanceM rounded to 1 m", async () => {
    const a = fleet[10] as Vehicle;
    // Exact ties in position on both sides of a's VIN.
    const { p } = await prepared(
      redactVehicles([...fleet, { ...a, vin: "ZZZZZZZZZZZZZZZZZ" }, { ...a, vin: "00000000000000000" }], 1e6).vehicles,
    );
    const all = redactVehicles(
      [...fleet, { ...a, vin: "ZZZZZZZZZZZZZZZZZ" }, { ...a, vin: "00000000000000000" }],
      1e6,
    ).vehicles;
    for (const limit of [1, 2, 3, 17, MAX]) {
      const q = parseVehicleQuery(`near=${a.position.latitude},${a.position.longitude}&radius=50000&limit=${limit}`, {
        maxLimit: MAX,
      });
      const r = queryVehicles(p, q);
      expect(r.total).toBe(brute(all, q).total);
      expect(r.ids?.length).toBe(Math.min(limit, r.total));
      expect(answer(p, q)).toBe(bruteText(all, q));
    }
  });

  it("serializes one vehicle as JSON.stringify({ vehicle, fetchedAt, stale })", () => {
    for (const veh of [fleet[0], fleet[1234], fleet[fleet.length - 1]] as Vehicle[]) {
      const i = findVin(snapshot, veh.vin);
      expect(i).toBeGreaterThanOrEqual(0);
      const text = decoder.decode(serializeVehicle(snapshot, i, { stale: true }));
      expect(text).toBe(JSON.stringify({ vehicle: veh, fetchedAt: new Date(FETCHED_AT).toISOString(), stale: true }));
      expect(v.is(VehicleResponseSchema, JSON.parse(text))).toBe(true);
    }
    expect(findVin(snapshot, "ZZZZZZZZZZZZZZZZZ")).toBe(-1);
    expect(findVin(snapshot, "short")).toBe(-1);
  });

  it("never carries a secret, whatever the query, and every answer fits the documented schema", () => {
    for (let i = 0; i < 100; i++) {
      const q = parseVehicleQuery(randomQuery(), { maxLimit: MAX });
      const text = answer(snapshot, q);
      expect(text).not.toContain("fuelCardPin");
      expect(text).not.toContain("secretFleetNote");
      expect(v.is(VehicleListSchema, JSON.parse(text))).toBe(true);
    }
  });
});

/** Follows `lastVin` from page to page; returns every VIN served, in order. */
function walk(p: Prepared | (() => Prepared), qs: string): { vins: string[]; pages: number } {
  const vins: string[] = [];
  let after: string | undefined;
  let pages = 0;
  for (;;) {
    const snap = typeof p === "function" ? p() : p;
    const q = parseVehicleQuery(after === undefined ? qs : `${qs}&cursor=${encodeCursor(after)}`, { maxLimit: MAX });
    const r = queryVehicles(snap, q);
    const body = JSON.parse(answer(snap, q)) as { vehicles: Vehicle[] };
    vins.push(...body.vehicles.map((x) => x.vin));
    pages++;
    if (r.lastVin === undefined) return { vins, pages };
    expect(r.lastVin).toBe(body.vehicles[body.vehicles.length - 1]?.vin);
    after = r.lastVin;
    if (pages > 10_000) throw new Error("no end");
  }
}

describe("cursor pagination (VIN order)", () => {
  it("walks every match exactly once, in VIN order, for filtered and unfiltered queries", () => {
    for (const qs of ["limit=7", "limit=500", "fuelType=ELECTRIC&limit=50", "bbox=13.2,52.4,13.5,52.6&limit=13"]) {
      const q = parseVehicleQuery(qs, { maxLimit: MAX });
      const want = brute(fleet, { ...q, limit: Number.MAX_SAFE_INTEGER }).vehicles.map((x) => x.vin);
      const { vins, pages } = walk(snapshot, qs);
      expect(vins).toEqual(want);
      expect(pages).toBe(Math.max(1, Math.ceil(want.length / q.limit)));
    }
  });

  it("total counts every match on every page", () => {
    const q = parseVehicleQuery(`limit=100&cursor=${encodeCursor((fleet[2000] as Vehicle).vin)}`, { maxLimit: MAX });
    const r = queryVehicles(snapshot, q);
    expect(r.total).toBe(fleet.length);
    expect(r.run).toEqual([2001, 2101]);
  });

  it("across a snapshot change: no vehicle twice, none skipped that is in both snapshots", {
    timeout: 30_000,
  }, async () => {
    // The second snapshot drops every 3rd vehicle and adds new ones with VINs all over the range.
    const kept = fleet.filter((_, i) => i % 3 !== 0);
    const added = redactVehicles(partnerFleet(mulberry32(7), 800), 1e6).vehicles;
    const next = redactVehicles([...kept, ...added], 1e6).vehicles;
    const { p: b } = await prepared(next, FETCHED_AT + 30_000);
    let page = 0;
    // Pages 1-3 from the first snapshot, the rest from the second.
    const { vins } = walk(() => (page++ < 3 ? snapshot : b), "limit=250");
    expect(new Set(vins).size).toBe(vins.length);
    const before = new Set(fleet.map((x) => x.vin));
    const inBoth = new Set(next.map((x) => x.vin).filter((vin) => before.has(vin)));
    const seen = new Set(vins);
    for (const vin of inBoth) expect(seen.has(vin)).toBe(true);
    // VIN order across the change.
    expect([...vins].sort()).toEqual(vins);
  });

  it("a cursor with near is a 400 naming cursor; a malformed cursor too", () => {
    expect(() =>
      parseVehicleQuery(`near=52.5,13.4&cursor=${encodeCursor("WME4530421Y000001")}`, { maxLimit: MAX }),
    ).toThrow(expect.objectContaining({ code: "invalid_parameter" }));
    for (const bad of ["", "!!!", "djI6V01F", encodeCursor("not-a-vin"), "A".repeat(65)]) {
      expect(() => parseVehicleQuery(`cursor=${bad}`, { maxLimit: MAX }), bad).toThrow(
        expect.objectContaining({ code: "invalid_parameter" }),
      );
    }
  });
});

describe("loadPrepared: integrity", () => {
  const damagedCopy = (mutate: (b: Uint8Array) => void, over: Partial<SnapshotEnvelope> = {}): SnapshotEnvelope => {
    const data = fleetEnv.data.slice();
    mutate(data);
    return { ...fleetEnv, ...over, data };
  };
  const textAt = loadPrepared(fleetEnv).text.byteOffset - fleetEnv.data.byteOffset;

  it("loads views over the buffer it was given (no copy of the text)", () => {
    const p = loadPrepared(fleetEnv);
    expect(p.text.buffer).toBe(fleetEnv.data.buffer);
    expect(p.count).toBe(fleet.length);
  });

  it("refuses a buffer that is truncated, foreign, damaged or not the envelope's", () => {
    const cases: [string, SnapshotEnvelope][] = [
      ["truncated", { ...fleetEnv, data: fleetEnv.data.slice(0, fleetEnv.data.length - 100) }],
      ["magic", damagedCopy((b) => b.set([0x7b], 0))],
      ["column byte (checksum)", damagedCopy((b) => (b[textAt - 9] = (b[textAt - 9] as number) ^ 1))],
      ["text's closing bracket", damagedCopy((b) => (b[b.length - 1] = 0x20))],
      ["etag", { ...fleetEnv, etag: '"other"' }],
      ["count", { ...fleetEnv, count: fleetEnv.count + 1 }],
      ["no data", { ...fleetEnv, data: new Uint8Array(0) }],
    ];
    for (const [name, env] of cases) {
      expect(() => loadPrepared(env), name).toThrow(expect.objectContaining({ code: "internal" }));
    }
  });

  it("finds a damaged item boundary before that item is served, by a list, a page or a VIN lookup", () => {
    const off1 = loadPrepared(fleetEnv).off[1] as number;
    const cases: [string, (b: Uint8Array) => void][] = [
      ["item boundary", (b) => (b[textAt + 1] = 0x20)],
      ["vin closing quote", (b) => (b[textAt + 1 + 25] = 0x20)],
      ["item separator", (b) => (b[textAt + off1 - 1] = 0x20)],
    ];
    // The first item in VIN order (the one damaged), its VIN and position.
    const sound = loadPrepared(fleetEnv);
    const firstVin = vinAt(sound, 0);
    const at = { lat: sound.lat[0] as number, lon: sound.lon[0] as number, radiusM: 1 };
    const internal = expect.objectContaining({ code: "internal" });
    for (const [name, mutate] of cases) {
      const serve = [
        (p: Prepared) => queryVehicles(p, { limit: MAX }),
        (p: Prepared) => queryVehicles(p, { limit: 1 }),
        (p: Prepared) => queryVehicles(p, { limit: 1, near: at }),
        (p: Prepared) => findVin(p, firstVin),
      ];
      for (const [k, answer] of serve.entries()) {
        // Loaded: the layout and the checksummed sections are sound; the first item is not.
        const p = loadPrepared(damagedCopy(mutate));
        expect(() => answer(p), `${name}, answer ${k}`).toThrow(internal);
      }
    }
    // An undamaged snapshot checks each block once: the answers and the flags.
    const p = loadPrepared(fleetEnv);
    expect([...p.unchecked].every((f) => f === 1)).toBe(true);
    queryVehicles(p, { limit: MAX });
    expect([...p.unchecked].every((f) => f === 0)).toBe(true);
  });
});
