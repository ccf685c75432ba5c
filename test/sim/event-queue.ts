// A deterministic priority queue of simulator events. Events run in (time, insertion sequence)
// order, so two events scheduled for the same time run in the order they were scheduled: nothing
// depends on the heap's internal layout.

/** Limit: events pending at once. A run that needs more is a simulator bug (a runaway schedule). */
export const DEFAULT_MAX_PENDING_EVENTS = 1_000_000;

interface Slot<T> {
  readonly time: number;
  readonly seq: number;
  readonly item: T;
}

export class EventQueue<T> {
  /** A binary min-heap on (time, seq). */
  private readonly heap: Slot<T>[] = [];
  private nextSeq = 0;
  private readonly maxPendingEvents: number;

  constructor(maxPendingEvents = DEFAULT_MAX_PENDING_EVENTS) {
    this.maxPendingEvents = maxPendingEvents;
  }

  get size(): number {
    return this.heap.length;
  }

  push(time: number, item: T): void {
    if (!Number.isFinite(time)) throw new Error(`event time must be finite, got ${time}`);
    if (this.heap.length >= this.maxPendingEvents) {
      throw new Error(`event queue full (limit maxPendingEvents=${this.maxPendingEvents})`);
    }
    const heap = this.heap;
    heap.push({ time, seq: this.nextSeq++, item });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      swap(heap, i, parent);
      i = parent;
    }
  }

  /** The time of the next event, or undefined when the queue is empty. */
  peekTime(): number | undefined {
    return this.heap[0]?.time;
  }

  pop(): { time: number; item: T } | undefined {
    const heap = this.heap;
    const top = heap[0];
    if (top === undefined) return undefined;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < heap.length && before(heap[left]!, heap[smallest]!)) smallest = left;
        if (right < heap.length && before(heap[right]!, heap[smallest]!)) smallest = right;
        if (smallest === i) break;
        swap(heap, i, smallest);
        i = smallest;
      }
    }
    return { time: top.time, item: top.item };
  }
}

function before<T>(a: Slot<T>, b: Slot<T>): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq);
}

function swap<T>(heap: Slot<T>[], i: number, j: number): void {
  const tmp = heap[i]!;
  heap[i] = heap[j]!;
  heap[j] = tmp;
}
