// A map from integer keys to values, kept in a plain object's elements instead of a Map's hash table,
// for long-lived maps whose entries come and go by the thousand per second (HTTP/2 streams, proposals
// waiting to be applied).
//
// Why not a Map: V8 (Node 20's 11.3) rebuilds a Map's table every few dozen insertions when entries
// are deleted as fast as they are added, and links the old table to the new one (for iterators that
// were walking the old). Once a table is in the old generation (a full GC promotes whatever is live
// in the young one, the current table included), its link outlives it: a scavenge takes every pointer
// from the old generation into the young one as live, dead holder or not, so the next table survives,
// is promoted, and in turn keeps its successor alive, and so on until the next full GC, after which
// it starts again. Every value a table held when it was
// replaced is promoted along with it: at 64 clients that is every request's objects, and full GCs
// every second or two. A plain object's elements are resized without such a link. Measured in
// README, "Where the time goes" ("GC: every gRPC call's objects were promoted, because of a Map").
//
// Keys are integers from 0 to MAX_INT_KEY (an object's element indices). Iteration is in ascending
// key order (where a Map iterates in insertion order; the two agree when keys only grow, as stream
// ids and log indices do), over the keys present when it starts; an entry deleted meanwhile is
// skipped.

/** The largest key: the largest element index of a JavaScript object. */
export const MAX_INT_KEY = 2 ** 32 - 2;

export class IntKeyMap<V> {
  private slots: Record<number, V> = Object.create(null) as Record<number, V>;
  /** Invariant: the number of own keys of `slots`. */
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(key: number): V | undefined {
    return this.slots[key];
  }

  has(key: number): boolean {
    return key in this.slots;
  }

  set(key: number, value: V): this {
    if (!(key in this.slots)) {
      if (!Number.isInteger(key) || key < 0 || key > MAX_INT_KEY) throw new RangeError(`IntKeyMap: a key must be an integer from 0 to ${MAX_INT_KEY}, got ${key}`);
      this.count++;
    }
    this.slots[key] = value;
    return this;
  }

  delete(key: number): boolean {
    if (!(key in this.slots)) return false;
    delete this.slots[key];
    this.count--;
    return true;
  }

  clear(): void {
    this.slots = Object.create(null) as Record<number, V>;
    this.count = 0;
  }

  *entries(): IterableIterator<[number, V]> {
    const slots = this.slots;
    for (const k of Object.keys(slots)) {
      // Deleted since the walk began (or the map was cleared): skip it, as a Map's iterator would.
      if (this.slots === slots && k in slots) yield [Number(k), slots[k as unknown as number]!];
    }
  }

  *keys(): IterableIterator<number> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): IterableIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): IterableIterator<[number, V]> {
    return this.entries();
  }

  forEach(fn: (value: V, key: number, map: this) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) fn.call(thisArg, v, k, this);
  }

  get [Symbol.toStringTag](): string {
    return 'IntKeyMap';
  }
}
