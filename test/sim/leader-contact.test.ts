import { describe, expect, it } from 'vitest';
import type { Message } from '../../src/raft/types.js';
import { LeaderContactCheck } from './leader-contact.js';

const resp = (from: number, to: number): Message => ({ type: 'HeartbeatResp', from, to, term: 1, context: 0 });

describe('stale-leader check', () => {
  it('passes a leader that keeps hearing from a majority', () => {
    const c = new LeaderContactCheck([1, 2, 3], 20);
    c.afterEvent(1, 'leader', 1);
    for (let t = 0; t < 100; t++) {
      c.onTick(1);
      if (t % 5 === 0) c.onDelivered(resp(2, 1));
      expect(() => c.afterEvent(1, 'leader', 1)).not.toThrow();
    }
  });

  it('flags a leader that went more than the bound without a majority', () => {
    const c = new LeaderContactCheck([1, 2, 3], 20);
    c.afterEvent(1, 'leader', 1);
    for (let t = 0; t < 20; t++) c.onTick(1);
    expect(() => c.afterEvent(1, 'leader', 1)).not.toThrow();
    c.onTick(1);
    expect(() => c.afterEvent(1, 'leader', 1)).toThrow(/stale-leader: node 1 still leads term 1/);
  });

  it('forgets leadership on step-down and restarts the clock in a new term', () => {
    const c = new LeaderContactCheck([1, 2, 3], 20);
    c.afterEvent(1, 'leader', 1);
    for (let t = 0; t < 30; t++) c.onTick(1);
    c.afterEvent(1, 'follower', 1);
    c.afterEvent(1, 'leader', 2);
    expect(() => c.afterEvent(1, 'leader', 2)).not.toThrow();
  });
});
