/**
 * A cheap look at the partner's JSON text before `JSON.parse` builds it. The byte cap alone does
 * not bound memory: 16 MiB of `[{},{},…]` is 5.6 million empty objects, 341 MiB once parsed
 * (docs/RELIABILITY.md, "Partner body size"), while an isolate or a Durable Object has 128 MB. The
 * item cap in the validator comes too late: it runs on the parsed tree.
 *
 * What a parsed tree costs is driven by how many values and containers it holds, not by its
 * bytes: a vehicle is ~440 bytes of text for 18 values, `{}` is 3 bytes for one object. So the
 * guard counts, with native `indexOf` (a character loop in JS measured about as slow as the parse
 * itself), every `,` (one per value after the first of each container) and every `{` and `[`,
 * and refuses the body once either count passes what `PARTNER_MAX_VEHICLES` real vehicles need,
 * with room to spare. Characters inside strings are counted too: the counts are upper bounds, so
 * a body can only be refused for them, never let through; a legitimate fleet would need 14 extra
 * commas or 2 extra braces inside the strings of every vehicle to be refused.
 * Both limits scale with `PARTNER_MAX_VEHICLES`: a partner whose vehicles grow more fields needs
 * that setting raised (the refusal names the limit it passed).
 */

/**
 * Values (array elements and object members, all depths) allowed per vehicle. A partner vehicle
 * has 18 (15 fields, the 2 of `position`, its place in the array); 24 leaves room for a few
 * fields the partner may add (the allow-list drops them) while keeping the parse of the worst
 * accepted shapes within the object's budget (measured in docs/RELIABILITY.md).
 */
export const VALUES_PER_VEHICLE = 24;
/** Objects and arrays allowed per vehicle: a partner vehicle has 2 (itself and `position`). */
export const CONTAINERS_PER_VEHICLE = 4;

export interface BodyLimits {
  /** Most `,` + `{` + `[` accepted: an upper bound of the values the parse would build. */
  maxValues: number;
  /** Most `{` + `[` accepted. */
  maxContainers: number;
}

/** Limits for a body of at most `maxVehicles` vehicles (PARTNER_MAX_VEHICLES). */
export function bodyLimits(maxVehicles: number): BodyLimits {
  // +2: the outer array, or the `{ "vehicles": [...] }` wrapper and its array.
  return { maxValues: maxVehicles * VALUES_PER_VEHICLE + 2, maxContainers: maxVehicles * CONTAINERS_PER_VEHICLE + 2 };
}

/** Upper bounds counted so far (counting stops at the first limit passed). */
interface BodyCounts {
  values: number;
  containers: number;
}

export type BodyVerdict = { ok: true; counts: BodyCounts } | { ok: false; counts: BodyCounts; reason: string };

/** Occurrences of `ch` in `text`, counting no further than `max + 1`. */
function countUpTo(text: string, ch: string, max: number): number {
  let n = 0;
  for (let i = text.indexOf(ch); i !== -1; i = text.indexOf(ch, i + 1)) {
    if (++n > max) break;
  }
  return n;
}

/**
 * Judges `text` before it is parsed. Never throws; stops counting at the first limit passed, so a
 * hostile body costs little more than a legitimate one.
 */
export function checkBodyShape(text: string, maxVehicles: number): BodyVerdict {
  const { maxValues, maxContainers } = bodyLimits(maxVehicles);
  const counts: BodyCounts = { values: 0, containers: 0 };
  counts.containers = countUpTo(text, "{", maxContainers);
  if (counts.containers <= maxContainers) counts.containers += countUpTo(text, "[", maxContainers - counts.containers);
  if (counts.containers > maxContainers) {
    counts.values = counts.containers;
    return { ok: false, counts, reason: `more than ${maxContainers} objects and arrays` };
  }
  // Each container holds at most one value more than its commas.
  counts.values = counts.containers + countUpTo(text, ",", maxValues - counts.containers);
  if (counts.values > maxValues) return { ok: false, counts, reason: `more than ${maxValues} values` };
  return { ok: true, counts };
}
