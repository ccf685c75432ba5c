// A FIFO queue with a fixed capacity: O(1) push, shift and drop of the oldest item.

export class RingQueue<T> {
  private readonly items: (T | undefined)[];
  /** Index of the oldest item. Invariant: 0 <= head < capacity. */
  private head = 0;
  /** Invariant: 0 <= size <= capacity. */
  private size = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) {
      throw new RangeError(`RingQueue: capacity must be a positive integer, got ${capacity}`);
    }
    this.items = new Array<T | undefined>(capacity);
  }

  get length(): number {
    return this.size;
  }

  get full(): boolean {
    return this.size === this.capacity;
  }

  /** Appends an item. Precondition: not full (the caller decides what to drop). */
  push(item: T): void {
    if (this.size === this.capacity) throw new Error('RingQueue.push: queue is full');
    this.items[(this.head + this.size) % this.capacity] = item;
    this.size++;
  }

  /** The oldest item, or undefined when empty. */
  peek(): T | undefined {
    return this.size === 0 ? undefined : this.items[this.head];
  }

  /** Removes and returns the oldest item, or undefined when empty. */
  shift(): T | undefined {
    if (this.size === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.size--;
    return item;
  }

  clear(): void {
    this.items.fill(undefined);
    this.head = 0;
    this.size = 0;
  }
}
