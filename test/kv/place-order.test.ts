// PlaceOrder: the order kept beside a Map for the session table and the record cache. Outdated places
// are skipped, and the memory stays bounded however long one key stays in front.

import { describe, expect, it } from 'vitest';
import { PLACE_SLACK, PlaceOrder } from '../../src/kv/place-order.js';

describe('PlaceOrder', () => {
  it('gives the oldest current place, skipping keys placed again, deleted or given a new value', () => {
    const map = new Map<string, object>();
    const order = new PlaceOrder(map);
    const put = (k: string): object => {
      const v = {};
      map.set(k, v);
      order.push(k, v);
      return v;
    };
    const a = put('a');
    put('b');
    put('c');
    put('a'); // a moves to the back
    map.delete('b');
    map.set('c', {}); // c's place is outdated: its value changed without a new place
    expect(order.oldest()).toBe('a');
    expect(order.oldestValue()).not.toBe(a);
    expect(order.currentKeys()).toEqual(['a']);
    order.shift();
    expect(order.oldest()).toBeUndefined();
  });

  it('holds at most about twice the keys plus PLACE_SLACK places while one key stays in front', () => {
    const map = new Map<string, number>();
    const order = new PlaceOrder(map);
    map.set('idle', 0);
    order.push('idle', 0);
    let most = 0;
    for (let i = 1; i <= 100_000; i++) {
      const k = `k${i % 10}`;
      map.set(k, i);
      order.push(k, i);
      most = Math.max(most, order.placeCount);
    }
    expect(most).toBeLessThanOrEqual(2 * map.size + PLACE_SLACK + 1);
    expect(order.oldest()).toBe('idle');
    expect(order.currentKeys()).toEqual(['idle', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7', 'k8', 'k9', 'k0']);
  });

  it('trims the places it has passed, and keeps its order across the trim', () => {
    const map = new Map<string, number>();
    const order = new PlaceOrder(map);
    const n = 5 * PLACE_SLACK;
    for (let i = 0; i < n; i++) {
      map.set(`k${i}`, i);
      order.push(`k${i}`, i);
    }
    let most = 0;
    for (let i = 0; i < n - 3; i++) {
      const k = order.oldest()!;
      expect(k).toBe(`k${i}`);
      order.shift();
      map.delete(k);
      most = Math.max(most, order.placeCount);
    }
    expect(order.placeCount).toBeLessThanOrEqual(2 * PLACE_SLACK + 3);
    expect(order.currentKeys()).toEqual([`k${n - 3}`, `k${n - 2}`, `k${n - 1}`]);
    expect(most).toBe(n);
  });

  it('reset replaces the order', () => {
    const map = new Map([
      ['x', 1],
      ['y', 2],
    ]);
    const order = new PlaceOrder(map);
    order.push('y', 2);
    order.reset([
      ['x', 1],
      ['y', 2],
    ]);
    expect(order.currentKeys()).toEqual(['x', 'y']);
  });
});
