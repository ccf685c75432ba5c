// An order of keys kept beside a Map, oldest first, for taking the oldest entry without deleting and
// re-inserting the Map's keys to move them: a Map whose keys are deleted and re-added at a high rate
// makes V8 rebuild its table every few dozen operations and chain the old tables (see
// src/transport/int-key-map.ts), and walking a Map from its front after many deletions there first
// steps over all their empty slots.
//
// Each place is a key with the value it had when placed. A place is current while the Map maps the
// key to that very value (identity); a key placed again, deleted or given a new value leaves its older
// places outdated, and they are skipped. So the owner only ever adds places: to move a key to the
// back, it places it again.

/**
 * Limit: outdated places kept beyond twice the Map's size before they are dropped, and places already
 * passed kept before the arrays are trimmed. Bounds the memory at about 2 * size + this.
 */
export const PLACE_SLACK = 1024;

export class PlaceOrder<V> {
  private readonly map: ReadonlyMap<string, V>;
  private keys: string[] = [];
  private values: V[] = [];
  /** Places before this index have been passed. */
  private head = 0;

  constructor(map: ReadonlyMap<string, V>) {
    this.map = map;
  }

  /** Places `key` with `value` (the Map's value for it) last. */
  push(key: string, value: V): void {
    this.keys.push(key);
    this.values.push(value);
    if (this.keys.length - this.head > 2 * this.map.size + PLACE_SLACK) this.compact();
  }

  /** The key of the oldest current place, passing the outdated ones for good; undefined if none. */
  oldest(): string | undefined {
    while (this.head < this.keys.length) {
      const key = this.keys[this.head]!;
      if (this.map.get(key) === this.values[this.head]) return key;
      this.head++;
    }
    return undefined;
  }

  /** The value of the oldest place; only right after oldest() returned a key. */
  oldestValue(): V {
    return this.values[this.head]!;
  }

  /** Passes the oldest place; only right after oldest() returned a key. */
  shift(): void {
    this.head++;
    if (this.head > PLACE_SLACK && 2 * this.head > this.keys.length) {
      // Only the places already passed: a copy, without the lookups compact() does.
      this.keys = this.keys.slice(this.head);
      this.values = this.values.slice(this.head);
      this.head = 0;
    }
  }

  /** Replaces the order with these places, oldest first. */
  reset(places: Iterable<readonly [key: string, value: V]>): void {
    this.keys = [];
    this.values = [];
    this.head = 0;
    for (const [key, value] of places) {
      this.keys.push(key);
      this.values.push(value);
    }
  }

  /** The keys of the current places, oldest first. */
  currentKeys(): string[] {
    this.compact();
    return this.keys.slice();
  }

  /** Places held, passed ones included (for tests of the bound). */
  get placeCount(): number {
    return this.keys.length;
  }

  /** Drops the passed and the outdated places. */
  private compact(): void {
    const keys: string[] = [];
    const values: V[] = [];
    for (let k = this.head; k < this.keys.length; k++) {
      const key = this.keys[k]!;
      const value = this.values[k]!;
      if (this.map.get(key) !== value) continue;
      keys.push(key);
      values.push(value);
    }
    this.keys = keys;
    this.values = values;
    this.head = 0;
  }
}
