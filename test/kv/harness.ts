// A node's storage and state machine without Raft: commands are appended to the log, committed and
// applied in one step, in the order the real node does it (persist, then apply).

import { encodeCommand, KvStateMachine, type ApplyResult, type Command, type KvStateMachineOptions } from '../../src/kv/index.js';
import type { Entry } from '../../src/raft/types.js';
import { NodeStore } from '../../src/storage/index.js';

/** A command whose proposedAtMs defaults to 0. */
type Loosen<C> = C extends Command ? Omit<C, 'proposedAtMs'> & { proposedAtMs?: number } : never;
export type CommandInput = Loosen<Command>;

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));

export class Harness {
  readonly store: NodeStore;
  readonly sm: KvStateMachine;
  readonly term = 1;

  private constructor(store: NodeStore, sm: KvStateMachine) {
    this.store = store;
    this.sm = sm;
  }

  static async open(dir: string, options: KvStateMachineOptions = {}): Promise<Harness> {
    const store = await NodeStore.open(dir, { clusterId: 'test', nodeId: 1 });
    try {
      const sm = await KvStateMachine.open(store, options);
      return new Harness(store, sm);
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  /** Builds the next entries of the log (not yet persisted). */
  entries(items: ReadonlyArray<CommandInput | 'noop' | Uint8Array>): Entry[] {
    let index = this.store.lastIndex;
    return items.map((item): Entry => {
      index++;
      if (item === 'noop') return { index, term: this.term, type: 'noop', data: new Uint8Array(0) };
      if (item instanceof Uint8Array) return { index, term: this.term, type: 'normal', data: item };
      return { index, term: this.term, type: 'normal', data: encodeCommand({ proposedAtMs: 0, ...item } as Command) };
    });
  }

  /** Appends and commits entries (one persist). */
  async commit(entries: readonly Entry[]): Promise<void> {
    const last = entries[entries.length - 1];
    if (last === undefined) return;
    await this.store.persist({ hardState: { term: this.term, vote: 1, commit: last.index }, entries });
  }

  /** Appends, commits and applies the items in one batch each; returns the apply results. */
  async run(...items: Array<CommandInput | 'noop' | Uint8Array>): Promise<ApplyResult[]> {
    const entries = this.entries(items);
    await this.commit(entries);
    return this.sm.apply(entries);
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}
