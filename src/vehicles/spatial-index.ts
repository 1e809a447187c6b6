/**
 * A static grid index over vehicle positions. Points are stored in cell order (row, then
 * column) in flat typed arrays, with an index of occupied cells and of occupied rows, so:
 *
 * - a bbox query visits the occupied rows in its latitude range and, in each, the occupied
 *   cells in its longitude range (two binary searches a row): its cost is about its answer plus
 *   the points of the cells on its border, whatever the size of the world or of the box;
 * - a `near` query visits, in each row, only the columns the circle can reach at that row's
 *   latitudes (the exact spherical bound), so it looks at little more than the circle's area.
 *
 * Results are exact: cell membership is only a pre-filter, each candidate is then tested
 * against the bbox or by haversine distance, the same tests a brute-force scan makes.
 */

/** Mean Earth radius (IUGG), metres. */
export const EARTH_RADIUS_M = 6_371_008.8;
/** Default cell edge in degrees: about 1.1 km north-south, 0.7 km east-west at 50°N, a few vehicles a cell in a city. */
export const DEFAULT_CELL_DEG = 0.01;
// Below this, row * columns would exceed 2^53 and cell keys would lose precision.
const MIN_CELL_DEG = 1e-4;
// Widens the analytic `near` bounds by ~1 cm so floating-point rounding can never drop a candidate.
const PAD_DEG = 1e-7;

const RAD = Math.PI / 180;

/** A box in degrees: `minLon <= lon <= maxLon`, `minLat <= lat <= maxLat` (no antimeridian crossing). */
export interface BBox {
  minLon: number;
  minLat: number;
  maxLon: number;
  maxLat: number;
}

/** Work counters, accumulated when passed to a query (tests use them to prove queries stay local). */
export interface IndexStats {
  /** Occupied cells visited. */
  cells: number;
  /** Points tested against the bbox or the radius. */
  points: number;
}

/** Great-circle distance in metres (haversine, spherical Earth of radius EARTH_RADIUS_M). */
export function haversineM(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const dLat = (lat2 - lat1) * RAD;
  const dLon = (lon2 - lon1) * RAD;
  const s = Math.sin(dLat / 2);
  const t = Math.sin(dLon / 2);
  const h = s * s + Math.cos(lat1 * RAD) * Math.cos(lat2 * RAD) * t * t;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(h)));
}

/** First index in `a[lo, hi)` whose value is >= x. */
function lowerBound(a: Int32Array, lo: number, hi: number, x: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((a[mid] as number) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** A position as the vehicle schema has it. */
export interface IndexedPosition {
  latitude: number;
  longitude: number;
}

/** The typed arrays behind an index (points in cell order; occupied cells and rows). */
export interface IndexParts {
  cellDeg: number;
  lat: Float64Array;
  lon: Float64Array;
  id: Int32Array;
  cellCol: Int32Array;
  cellStart: Int32Array;
  rowY: Int32Array;
  rowCellStart: Int32Array;
}

/** The grid index. Immutable once built; ids are indices into the positions it was built from. */
export class SpatialIndex {
  /** Number of points. */
  size: number;
  /** Cell edge, degrees. */
  readonly cellDeg: number;
  // Points in cell order.
  #lat: Float64Array;
  #lon: Float64Array;
  #id: Int32Array;
  // Occupied cells in (row, col) order: column, and the first point of each (plus an end sentinel).
  #cellCol: Int32Array;
  #cellStart: Int32Array;
  // Occupied rows in order: row number, and the first cell of each (plus an end sentinel).
  #rowY: Int32Array;
  #rowCellStart: Int32Array;

  /**
   * Builds the index in O(n log n). Positions must be finite and in range (the vehicle schema
   * guarantees it); `cellDeg` defaults to DEFAULT_CELL_DEG and is clamped to [1e-4, 10].
   */
  constructor(positions: ArrayLike<IndexedPosition>, opts: { cellDeg?: number } = {}) {
    const cellDeg = Math.min(10, Math.max(MIN_CELL_DEG, opts.cellDeg ?? DEFAULT_CELL_DEG));
    this.cellDeg = cellDeg;
    const n = positions.length;
    this.size = n;
    const cols = Math.ceil(360 / cellDeg) + 1;
    const rowOf = new Int32Array(n);
    const colOf = new Int32Array(n);
    const key = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const p = positions[i] as IndexedPosition;
      const r = this.#row(p.latitude);
      const c = this.#col(p.longitude);
      rowOf[i] = r;
      colOf[i] = c;
      key[i] = r * cols + c;
    }
    // Ids sorted by cell, ascending within a cell. When `key * n + id` is a safe integer, one
    // numeric typed-array sort of those packed values does it (several times faster than a
    // comparator sort); otherwise a stable comparator sort.
    let order: ArrayLike<number>;
    if (Number.isSafeInteger((cols * (this.#row(90) + 1) + 1) * Math.max(1, n))) {
      const packed = new Float64Array(n);
      for (let i = 0; i < n; i++) packed[i] = (key[i] as number) * n + i;
      packed.sort();
      const ids = new Int32Array(n);
      for (let k = 0; k < n; k++) ids[k] = (packed[k] as number) % n;
      order = ids;
    } else {
      order = Array.from({ length: n }, (_, i) => i).sort((a, b) => (key[a] as number) - (key[b] as number));
    }

    this.#lat = new Float64Array(n);
    this.#lon = new Float64Array(n);
    this.#id = new Int32Array(n);
    const cellCol: number[] = [];
    const cellStart: number[] = [];
    const rowY: number[] = [];
    const rowCellStart: number[] = [];
    let prevKey = -1;
    let prevRow = -1;
    for (let k = 0; k < n; k++) {
      const i = order[k] as number;
      const p = positions[i] as IndexedPosition;
      this.#lat[k] = p.latitude;
      this.#lon[k] = p.longitude;
      this.#id[k] = i;
      if (key[i] !== prevKey) {
        prevKey = key[i] as number;
        const r = rowOf[i] as number;
        if (r !== prevRow) {
          prevRow = r;
          rowY.push(r);
          rowCellStart.push(cellCol.length);
        }
        cellCol.push(colOf[i] as number);
        cellStart.push(k);
      }
    }
    cellStart.push(n);
    rowCellStart.push(cellCol.length);
    this.#cellCol = Int32Array.from(cellCol);
    this.#cellStart = Int32Array.from(cellStart);
    this.#rowY = Int32Array.from(rowY);
    this.#rowCellStart = Int32Array.from(rowCellStart);
  }

  /** The index as typed arrays (the prepared snapshot ships them, so isolates never rebuild it). */
  toParts(): IndexParts {
    return {
      cellDeg: this.cellDeg,
      lat: this.#lat,
      lon: this.#lon,
      id: this.#id,
      cellCol: this.#cellCol,
      cellStart: this.#cellStart,
      rowY: this.#rowY,
      rowCellStart: this.#rowCellStart,
    };
  }

  /** An index over arrays made by `toParts` (views are kept, not copied). The caller checks them. */
  static fromParts(parts: IndexParts): SpatialIndex {
    const index = new SpatialIndex([], { cellDeg: parts.cellDeg });
    index.size = parts.id.length;
    index.#lat = parts.lat;
    index.#lon = parts.lon;
    index.#id = parts.id;
    index.#cellCol = parts.cellCol;
    index.#cellStart = parts.cellStart;
    index.#rowY = parts.rowY;
    index.#rowCellStart = parts.rowCellStart;
    return index;
  }

  /** Occupied cells. */
  get cellCount(): number {
    return this.#cellCol.length;
  }

  // One formula for points and query bounds: both are monotonic in the coordinate, so a point
  // inside a range always lands in a cell inside the range's cells.
  #row(lat: number): number {
    return Math.floor((lat + 90) / this.cellDeg);
  }
  #col(lon: number): number {
    return Math.floor((lon + 180) / this.cellDeg);
  }

  /** Ids of the points inside `bbox` (edges included), ascending. */
  within(bbox: BBox, stats?: IndexStats): Int32Array {
    const out: number[] = [];
    const { minLon, minLat, maxLon, maxLat } = bbox;
    if (!(minLat <= maxLat && minLon <= maxLon)) return new Int32Array(0);
    const r1 = this.#row(maxLat);
    const c0 = this.#col(minLon);
    const c1 = this.#col(maxLon);
    const lat = this.#lat;
    const lon = this.#lon;
    let cells = 0;
    let points = 0;
    for (let ri = lowerBound(this.#rowY, 0, this.#rowY.length, this.#row(minLat)); ri < this.#rowY.length; ri++) {
      if ((this.#rowY[ri] as number) > r1) break;
      const end = this.#rowCellStart[ri + 1] as number;
      for (let ci = lowerBound(this.#cellCol, this.#rowCellStart[ri] as number, end, c0); ci < end; ci++) {
        if ((this.#cellCol[ci] as number) > c1) break;
        cells++;
        const pEnd = this.#cellStart[ci + 1] as number;
        for (let k = this.#cellStart[ci] as number; k < pEnd; k++) {
          points++;
          const y = lat[k] as number;
          const x = lon[k] as number;
          if (y >= minLat && y <= maxLat && x >= minLon && x <= maxLon) out.push(this.#id[k] as number);
        }
      }
    }
    if (stats) {
      stats.cells += cells;
      stats.points += points;
    }
    return Int32Array.from(out).sort();
  }

  /**
   * Points within `radiusM` metres (haversine distance <= radius) of (lat, lon), unordered,
   * with their distances. Handles circles that cross the antimeridian or contain a pole.
   */
  near(lat: number, lon: number, radiusM: number, stats?: IndexStats): { ids: number[]; distances: number[] } {
    const ids: number[] = [];
    const distances: number[] = [];
    if (!(radiusM >= 0) || !Number.isFinite(lat) || !Number.isFinite(lon)) return { ids, distances };
    const delta = radiusM / EARTH_RADIUS_M; // angular radius, radians
    const deltaDeg = delta / RAD;
    const phi0 = lat * RAD;
    const sinPhi0 = Math.sin(phi0);
    const cosPhi0 = Math.cos(phi0);
    const cosDelta = Math.cos(delta);
    // Latitude of the circle's widest point: Δλ(φ) rises to it and falls after, so within a
    // latitude band the widest reach is at the band's latitude closest to it.
    const sinStar = sinPhi0 / cosDelta;
    const containsPole =
      delta >= Math.PI / 2 || Math.abs(sinStar) >= 1 || lat + deltaDeg >= 90 || lat - deltaDeg <= -90;
    const phiStar = containsPole ? phi0 : Math.asin(sinStar);

    const r0 = this.#row(Math.max(-90, lat - deltaDeg - PAD_DEG));
    const r1 = this.#row(Math.min(90, lat + deltaDeg + PAD_DEG));
    const cd = this.cellDeg;
    const latA = this.#lat;
    const lonA = this.#lon;
    let cells = 0;
    let points = 0;

    const scan = (ri: number, loLon: number, hiLon: number): void => {
      const end = this.#rowCellStart[ri + 1] as number;
      const c1 = this.#col(hiLon);
      for (
        let ci = lowerBound(this.#cellCol, this.#rowCellStart[ri] as number, end, this.#col(loLon));
        ci < end;
        ci++
      ) {
        if ((this.#cellCol[ci] as number) > c1) break;
        cells++;
        const pEnd = this.#cellStart[ci + 1] as number;
        for (let k = this.#cellStart[ci] as number; k < pEnd; k++) {
          points++;
          const d = haversineM(lat, lon, latA[k] as number, lonA[k] as number);
          if (d <= radiusM) {
            ids.push(this.#id[k] as number);
            distances.push(d);
          }
        }
      }
    };

    for (let ri = lowerBound(this.#rowY, 0, this.#rowY.length, r0); ri < this.#rowY.length; ri++) {
      const row = this.#rowY[ri] as number;
      if (row > r1) break;
      // The row's latitude band, padded: rounding in #row may put a point a hair outside it.
      const bandLo = Math.max(-90, row * cd - 90 - PAD_DEG) * RAD;
      const bandHi = Math.min(90, (row + 1) * cd - 90 + PAD_DEG) * RAD;
      let half = 180;
      if (!containsPole) {
        const phi = Math.min(bandHi, Math.max(bandLo, phiStar));
        const cosPhi = Math.cos(phi);
        // Spherical law of cosines solved for the longitude difference at latitude φ.
        const c = (cosDelta - Math.sin(phi) * sinPhi0) / (cosPhi * cosPhi0);
        if (c > 1 + 1e-12) continue; // the circle does not reach this band
        if (c > -1) half = Math.acos(Math.min(1, c)) / RAD + PAD_DEG;
      }
      if (half >= 180) {
        scan(ri, -180, 180);
      } else if (lon - half < -180) {
        scan(ri, -180, lon + half);
        scan(ri, lon - half + 360, 180);
      } else if (lon + half > 180) {
        scan(ri, -180, lon + half - 360);
        scan(ri, lon - half, 180);
      } else {
        scan(ri, lon - half, lon + half);
      }
    }
    if (stats) {
      stats.cells += cells;
      stats.points += points;
    }
    return { ids, distances };
  }
}
