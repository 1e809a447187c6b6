import { describe, expect, it } from "vitest";
import { mulberry32 } from "../../../sandbox/prng.ts";
import {
  type BBox,
  DEFAULT_CELL_DEG,
  EARTH_RADIUS_M,
  haversineM,
  type IndexStats,
  SpatialIndex,
} from "../../../src/vehicles/spatial-index.ts";

interface P {
  latitude: number;
  longitude: number;
}

const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));

/**
 * 5,000 points: dense cities, a sprinkle over the world, and the awkward places: the
 * antimeridian, the poles, exact cell boundaries, and repeated positions.
 */
function generate(rnd: () => number, n = 5000): P[] {
  const cities: [number, number][] = [
    [52.52, 13.405],
    [48.137, 11.575],
    [45.464, 9.19],
    [48.857, 2.352],
    [-36.85, 174.76],
    [64.84, -147.72],
  ];
  const pts: P[] = [];
  while (pts.length < n) {
    const k = rnd();
    if (k < 0.6) {
      const [lat, lon] = cities[Math.floor(rnd() * cities.length)] as [number, number];
      pts.push({ latitude: lat + (rnd() - 0.5) * 0.4, longitude: lon + (rnd() - 0.5) * 0.6 });
    } else if (k < 0.75) {
      pts.push({ latitude: rnd() * 180 - 90, longitude: rnd() * 360 - 180 });
    } else if (k < 0.83) {
      // Near the antimeridian, on both sides, and on it.
      const lon = rnd() < 0.1 ? (rnd() < 0.5 ? 180 : -180) : rnd() < 0.5 ? 180 - rnd() * 0.5 : -180 + rnd() * 0.5;
      pts.push({ latitude: (rnd() - 0.5) * 2, longitude: lon });
    } else if (k < 0.89) {
      // Near the poles, and on them.
      const lat = rnd() < 0.1 ? 90 : 90 - rnd() * 0.6;
      pts.push({ latitude: rnd() < 0.5 ? lat : -lat, longitude: rnd() * 360 - 180 });
    } else if (k < 0.95) {
      // On cell boundaries.
      const lat = Math.round((52 + rnd()) / DEFAULT_CELL_DEG) * DEFAULT_CELL_DEG;
      const lon = Math.round((13 + rnd()) / DEFAULT_CELL_DEG) * DEFAULT_CELL_DEG;
      pts.push({ latitude: lat, longitude: lon });
    } else {
      // A repeat of an earlier position.
      const p = pts[Math.floor(rnd() * pts.length)];
      if (p) pts.push({ ...p });
    }
  }
  return pts;
}

function bruteWithin(pts: P[], b: BBox): number[] {
  const out: number[] = [];
  pts.forEach((p, i) => {
    if (p.latitude >= b.minLat && p.latitude <= b.maxLat && p.longitude >= b.minLon && p.longitude <= b.maxLon)
      out.push(i);
  });
  return out;
}

function bruteNear(pts: P[], lat: number, lon: number, r: number): [number, number][] {
  const out: [number, number][] = [];
  pts.forEach((p, i) => {
    const d = haversineM(lat, lon, p.latitude, p.longitude);
    if (d <= r) out.push([i, d]);
  });
  return out;
}

const sortedPairs = (r: { ids: number[]; distances: number[] }) =>
  r.ids.map((id, k) => [id, r.distances[k]] as [number, number]).sort((a, b) => a[0] - b[0]);

/** A random bbox: its size from a metre to the whole world, sometimes snapped to points or cells. */
function randomBBox(rnd: () => number, pts: P[]): BBox {
  const k = rnd();
  let lat: number;
  let lon: number;
  if (k < 0.5) {
    const p = pts[Math.floor(rnd() * pts.length)] as P;
    lat = p.latitude;
    lon = p.longitude;
  } else {
    lat = rnd() * 180 - 90;
    lon = rnd() * 360 - 180;
  }
  const size = 10 ** (rnd() * 7 - 5); // 1e-5 .. 100 degrees
  let minLat = clamp(lat - rnd() * size, -90, 90);
  let maxLat = clamp(lat + rnd() * size, -90, 90);
  let minLon = clamp(lon - rnd() * size * 1.5, -180, 180);
  let maxLon = clamp(lon + rnd() * size * 1.5, -180, 180);
  if (rnd() < 0.15) {
    // Edges exactly on points: inclusive on every side.
    const a = pts[Math.floor(rnd() * pts.length)] as P;
    const b = pts[Math.floor(rnd() * pts.length)] as P;
    minLat = Math.min(a.latitude, b.latitude);
    maxLat = Math.max(a.latitude, b.latitude);
    minLon = Math.min(a.longitude, b.longitude);
    maxLon = Math.max(a.longitude, b.longitude);
  } else if (rnd() < 0.1) {
    // Edges exactly on cell boundaries.
    const snap = (x: number) => Math.round(x / DEFAULT_CELL_DEG) * DEFAULT_CELL_DEG;
    minLat = clamp(snap(minLat), -90, 90);
    maxLat = clamp(snap(maxLat), -90, 90);
    minLon = clamp(snap(minLon), -180, 180);
    maxLon = clamp(snap(maxLon), -180, 180);
  }
  return { minLon, minLat, maxLon, maxLat };
}

const rnd = mulberry32(20240601);
const points = generate(rnd);
const index = new SpatialIndex(points);

describe("haversineM", () => {
  it("measures known distances", () => {
    expect(haversineM(0, 0, 0, 0)).toBe(0);
    // One degree of latitude on the mean sphere.
    expect(haversineM(0, 0, 1, 0)).toBeCloseTo((EARTH_RADIUS_M * Math.PI) / 180, 6);
    // Berlin to Paris, about 878 km.
    expect(haversineM(52.52, 13.405, 48.857, 2.352) / 1000).toBeCloseTo(877.5, 0);
    // Across the antimeridian: 0.2 degrees, not 359.8.
    expect(haversineM(0, 179.9, 0, -179.9)).toBeCloseTo((0.2 * EARTH_RADIUS_M * Math.PI) / 180, 3);
    // Pole to pole.
    expect(haversineM(90, 0, -90, 0)).toBeCloseTo(Math.PI * EARTH_RADIUS_M, 3);
  });
});

describe("SpatialIndex.within", () => {
  it("equals a brute-force scan for 2,000 random boxes", () => {
    let nonEmpty = 0;
    let empty = 0;
    for (let q = 0; q < 2000; q++) {
      const b = randomBBox(rnd, points);
      const expected = bruteWithin(points, b);
      expect([...index.within(b)]).toEqual(expected);
      if (expected.length > 0) nonEmpty++;
      else empty++;
    }
    // The generator covers both cases well.
    expect(nonEmpty).toBeGreaterThan(300);
    expect(empty).toBeGreaterThan(300);
  }, 30_000);

  it("handles the whole world, degenerate boxes and the edges of the map", () => {
    const cases: BBox[] = [
      { minLon: -180, minLat: -90, maxLon: 180, maxLat: 90 },
      { minLon: 179.5, minLat: -1, maxLon: 180, maxLat: 1 },
      { minLon: -180, minLat: -1, maxLon: -179.5, maxLat: 1 },
      { minLon: -180, minLat: 89.4, maxLon: 180, maxLat: 90 },
      { minLon: -180, minLat: -90, maxLon: 180, maxLat: -89.4 },
      { minLon: 180, minLat: -90, maxLon: 180, maxLat: 90 },
      { minLon: 0, minLat: 0, maxLon: 0, maxLat: 0 },
      { minLon: 13.1, minLat: 52.1, maxLon: 13.1, maxLat: 52.9 },
      { minLon: 5, minLat: 5, maxLon: 4, maxLat: 6 }, // inverted: empty
    ];
    const p = points[42] as P;
    cases.push({ minLon: p.longitude, minLat: p.latitude, maxLon: p.longitude, maxLat: p.latitude });
    for (const b of cases) expect([...index.within(b)]).toEqual(bruteWithin(points, b));
    expect(index.within({ minLon: -180, minLat: -90, maxLon: 180, maxLat: 90 })).toHaveLength(points.length);
  });

  it("returns ids ascending", () => {
    const ids = [...index.within({ minLon: 12, minLat: 51, maxLon: 15, maxLat: 54 })];
    expect(ids.length).toBeGreaterThan(100);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
  });

  it("works on an empty index and a single point", () => {
    const empty = new SpatialIndex([]);
    expect([...empty.within({ minLon: -180, minLat: -90, maxLon: 180, maxLat: 90 })]).toEqual([]);
    expect(empty.near(0, 0, 50_000).ids).toEqual([]);
    const one = new SpatialIndex([{ latitude: 90, longitude: 180 }]);
    expect([...one.within({ minLon: 180, minLat: 90, maxLon: 180, maxLat: 90 })]).toEqual([0]);
    expect(one.near(89.9999, -180, 20).ids).toEqual([0]);
  });

  it("is exact with other cell sizes (both sort paths of the build)", () => {
    for (const cellDeg of [1e-4, 0.001, 0.05, 1, 10]) {
      const idx = new SpatialIndex(points, { cellDeg });
      for (let q = 0; q < 200; q++) {
        const b = randomBBox(rnd, points);
        expect([...idx.within(b)]).toEqual(bruteWithin(points, b));
      }
    }
  });
});

describe("SpatialIndex.near", () => {
  it("equals a brute-force scan for 2,000 random circles, distances included", () => {
    let nonEmpty = 0;
    let empty = 0;
    for (let q = 0; q < 2000; q++) {
      let lat: number;
      let lon: number;
      const k = rnd();
      if (k < 0.5) {
        const p = points[Math.floor(rnd() * points.length)] as P;
        lat = clamp(p.latitude + (rnd() - 0.5) * 0.01, -90, 90);
        lon = clamp(p.longitude + (rnd() - 0.5) * 0.01, -180, 180);
      } else if (k < 0.6) {
        // Antimeridian and poles.
        lat = rnd() < 0.5 ? (rnd() - 0.5) * 2 : (rnd() < 0.5 ? 1 : -1) * (90 - rnd() * 0.5);
        lon = rnd() < 0.5 ? 180 - rnd() * 0.3 : -180 + rnd() * 0.3;
      } else {
        lat = rnd() * 180 - 90;
        lon = rnd() * 360 - 180;
      }
      const radius = rnd() < 0.1 ? 50_000 : 10 ** (rnd() * 4.7); // 1 m .. 50 km
      const expected = bruteNear(points, lat, lon, radius);
      expect(sortedPairs(index.near(lat, lon, radius))).toEqual(expected);
      if (expected.length > 0) nonEmpty++;
      else empty++;
    }
    expect(nonEmpty).toBeGreaterThan(300);
    expect(empty).toBeGreaterThan(100);
  }, 30_000);

  it("finds a point at distance 0 and at exactly the radius", () => {
    const p = points[7] as P;
    const r = index.near(p.latitude, p.longitude, 0);
    expect(r.ids).toContain(7);
    const q = points[8] as P;
    const d = haversineM(p.latitude, p.longitude, q.latitude, q.longitude);
    if (d <= 50_000) expect(index.near(p.latitude, p.longitude, d).ids).toContain(8);
  });

  it("reaches the circle's widest longitude, which lies poleward of its centre", () => {
    // On a sphere a circle is widest at sin φ* = sin φ0 / cos δ, not at its centre's latitude.
    // Put a point there, a hair inside the circle, just past a cell boundary: an index that
    // bounded rows by the centre's latitude would skip its cell.
    for (const lat0 of [60, 80, -75]) {
      for (const side of [1, -1]) {
        const r = 50_000;
        const delta = r / EARTH_RADIUS_M;
        const phiStar = (Math.asin(Math.sin((lat0 * Math.PI) / 180) / Math.cos(delta)) * 180) / Math.PI;
        const widest = (Math.asin(Math.sin(delta) / Math.cos((lat0 * Math.PI) / 180)) * 180) / Math.PI;
        const boundary = 10; // a cell boundary at the default cell size
        const lon0 = boundary - side * (widest - 5e-7);
        const p = { latitude: phiStar, longitude: lon0 + side * (widest - 1e-9) };
        expect(haversineM(lat0, lon0, p.latitude, p.longitude)).toBeLessThanOrEqual(r);
        const idx = new SpatialIndex([p]);
        expect(idx.near(lat0, lon0, r).ids).toEqual([0]);
      }
    }
  });

  it("handles circles around a pole and across the antimeridian", () => {
    for (const [lat, lon] of [
      [90, 0],
      [-90, 123],
      [89.8, -179.99],
      [0, 180],
      [0, -180],
      [-0.5, 179.8],
    ] as [number, number][]) {
      for (const r of [1000, 25_000, 50_000]) {
        expect(sortedPairs(index.near(lat, lon, r))).toEqual(bruteNear(points, lat, lon, r));
      }
    }
  });
});

describe("work done by a query stays near the size of its answer", () => {
  // Counters, not timings: the cells and points a query looks at.
  const cellOf = (p: P, cd = DEFAULT_CELL_DEG) => [
    Math.floor((p.latitude + 90) / cd),
    Math.floor((p.longitude + 180) / cd),
  ];

  it("a bbox examines exactly the points of the cells it overlaps", () => {
    for (let q = 0; q < 300; q++) {
      const b = randomBBox(rnd, points);
      const stats: IndexStats = { cells: 0, points: 0 };
      const answer = index.within(b, stats).length;
      const [r0, c0] = cellOf({ latitude: b.minLat, longitude: b.minLon });
      const [r1, c1] = cellOf({ latitude: b.maxLat, longitude: b.maxLon });
      const inCells = points.filter((p) => {
        const [r, c] = cellOf(p);
        return r! >= r0! && r! <= r1! && c! >= c0! && c! <= c1!;
      });
      const cells = new Set(inCells.map((p) => cellOf(p).join(":")));
      expect(stats.points).toBe(inCells.length);
      expect(stats.cells).toBe(cells.size);
      expect(stats.points).toBeGreaterThanOrEqual(answer);
    }
  });

  it("a small box in a dense city examines a small multiple of its answer, not the fleet", () => {
    const r = mulberry32(7);
    const city = Array.from({ length: 20_000 }, () => ({ latitude: 52.3 + r() * 0.4, longitude: 13.0 + r() * 0.8 }));
    const idx = new SpatialIndex(city);
    const stats: IndexStats = { cells: 0, points: 0 };
    const answer = idx.within({ minLon: 13.35, minLat: 52.48, maxLon: 13.45, maxLat: 52.53 }, stats).length;
    expect(answer).toBeGreaterThan(200);
    expect(stats.points).toBeLessThan(answer * 1.5);
    expect(stats.points).toBeLessThan(city.length / 20);

    const nearStats: IndexStats = { cells: 0, points: 0 };
    const hits = idx.near(52.5, 13.4, 5000, nearStats).ids.length;
    expect(hits).toBeGreaterThan(300);
    // The circle's own area, plus about one ring of cells: tighter than its bounding box (4/π).
    expect(nearStats.points).toBeLessThan(hits * 1.4);

    const missStats: IndexStats = { cells: 0, points: 0 };
    expect(idx.within({ minLon: -10, minLat: 0, maxLon: 10, maxLat: 50 }, missStats)).toHaveLength(0);
    expect(missStats).toEqual({ cells: 0, points: 0 });
  });

  it("a near query never examines a point outside the circle's bounding box plus one cell", () => {
    for (let q = 0; q < 300; q++) {
      const p = points[Math.floor(rnd() * points.length)] as P;
      const radius = 10 ** (rnd() * 4.7);
      if (Math.abs(p.latitude) > 89) continue; // around a pole the box is the whole band
      const stats: IndexStats = { cells: 0, points: 0 };
      const answer = index.near(p.latitude, p.longitude, radius, stats).ids.length;
      const dLat = ((radius / EARTH_RADIUS_M) * 180) / Math.PI + DEFAULT_CELL_DEG;
      const dLon = dLat / Math.cos(((Math.abs(p.latitude) + dLat) * Math.PI) / 180) + DEFAULT_CELL_DEG;
      const box = points.filter((o) => {
        const dl = Math.abs(o.longitude - p.longitude);
        return Math.abs(o.latitude - p.latitude) <= dLat && Math.min(dl, 360 - dl) <= dLon;
      }).length;
      expect(stats.points).toBeGreaterThanOrEqual(answer);
      expect(stats.points).toBeLessThanOrEqual(box);
    }
  });
});
