// The shapes the client library gives and takes. Keys and values are bytes (Uint8Array); strings
// are accepted wherever bytes are and encoded as UTF-8. Every 64-bit integer of the wire is a plain
// number here, converted exactly (a value beyond Number.MAX_SAFE_INTEGER is refused, not rounded).

/**
 * How a read is served, from strongest (and slowest) to weakest:
 *
 * - `'linearizable'`: ReadIndex. The leader confirms with a quorum that it is still the leader and
 *   serves once it has applied everything committed up to that moment, so the read sees every write
 *   acknowledged before the read started. Costs one round trip from the leader to a majority.
 * - `'lease'`: served by the leader inside its leader lease, without a round trip to the others.
 *   Linearizable as long as clock drift between the nodes stays within the lease's safety margin.
 *   A node that cannot serve it this way serves it as `'linearizable'` (the response header says
 *   which was used).
 * - `'stale'`: served by whichever node is asked, from its local state, at once. It may be behind
 *   the leader; the header reports the index it was served at and `stalenessMs`, the time since that
 *   node last heard from a leader. `minIndex` and `maxStalenessMs` bound how stale it may be.
 */
export type Consistency = 'linearizable' | 'lease' | 'stale';

/** Bytes, or a string (encoded as UTF-8). */
export type Bytes = string | Uint8Array;

/** What every response that reflects the store carries. */
export interface ResponseHeader {
  /** Reads: the applied index the answer was served at. Writes: the index the write committed at. */
  readonly index: number;
  /** The node that served the request. */
  readonly nodeId: number;
  /** That node's term when it answered. */
  readonly term: number;
  /** The leader that node knew of, 0 if none. */
  readonly leaderId: number;
  /** Reads: the consistency actually used. Writes: null. */
  readonly consistency: Consistency | null;
  /** STALE reads: ms since the serving node last heard from a leader (0 on a leader in contact with a majority). */
  readonly stalenessMs: number;
}

const decoder = new TextDecoder('utf-8');

/** A stored pair. */
export class KeyValue {
  readonly key: Uint8Array;
  /** Empty for a keysOnly range. */
  readonly value: Uint8Array;
  /** Index of the write that created the key (since its last deletion); 0 for a keysOnly range. */
  readonly createIndex: number;
  /** Index of the write that last modified the key; 0 for a keysOnly range. */
  readonly modIndex: number;
  /** Writes to the key since it was created (1 after the first put); 0 for a keysOnly range. */
  readonly version: number;

  constructor(key: Uint8Array, value: Uint8Array, createIndex: number, modIndex: number, version: number) {
    this.key = key;
    this.value = value;
    this.createIndex = createIndex;
    this.modIndex = modIndex;
    this.version = version;
  }

  /** The key decoded as UTF-8 (invalid sequences become U+FFFD). */
  get keyString(): string {
    return decoder.decode(this.key);
  }

  /** The value decoded as UTF-8 (invalid sequences become U+FFFD). */
  get valueString(): string {
    return decoder.decode(this.value);
  }
}

/** Options every call takes. */
export interface CallOptions {
  /** This call's deadline, in ms from now, over all its attempts; the client's timeoutMs by default. */
  readonly timeoutMs?: number;
}

export interface ReadOptions extends CallOptions {
  /** 'linearizable' by default. */
  readonly consistency?: Consistency;
  /**
   * STALE only: the serving node first waits (within the deadline) until it has applied at least
   * this index. With `session: true` the client passes the highest index it has seen when that is
   * higher.
   */
  readonly minIndex?: number;
  /** STALE only: refuse with TooStaleError if the node has not heard from a leader within this time. */
  readonly maxStalenessMs?: number;
}

export interface WriteOptions extends CallOptions {
  /** Return the previous pair (put, delete). */
  readonly prevKv?: boolean;
}

export interface PutResult {
  readonly header: ResponseHeader;
  /** The pair before the put, when asked for with prevKv and the key existed. */
  readonly prevKv: KeyValue | undefined;
}

export interface GetResult {
  readonly header: ResponseHeader;
  readonly found: boolean;
  /** The pair, when found. */
  readonly kv: KeyValue | undefined;
  /** Shorthand for kv?.value. */
  readonly value: Uint8Array | undefined;
  /** Shorthand for kv?.valueString. */
  readonly valueString: string | undefined;
}

export interface DeleteResult {
  readonly header: ResponseHeader;
  /** False if the key did not exist. */
  readonly deleted: boolean;
  /** The deleted pair, when asked for with prevKv and the key existed. */
  readonly prevKv: KeyValue | undefined;
}

/** Keys starting with `prefix`, or keys in [start, end) (no end, or an empty one: to the last key). */
export type KeyRange = { readonly prefix: Bytes } | { readonly start: Bytes; readonly end?: Bytes };

export interface RangeOptions extends ReadOptions {
  /** At most this many pairs in the page (the server's page limit when 0 or absent). */
  readonly limit?: number;
  /** Return keys only: values are empty and the indexes and version 0. */
  readonly keysOnly?: boolean;
  /** A previous page's nextPageToken, to continue after it. */
  readonly pageToken?: Uint8Array;
}

export interface RangeResult {
  readonly header: ResponseHeader;
  readonly kvs: readonly KeyValue[];
  /** More pairs follow in the range; pass nextPageToken to read them. */
  readonly more: boolean;
  /** Set when more. */
  readonly nextPageToken: Uint8Array | undefined;
}

/** What a compare-and-swap compares; exactly one of the three. */
export type Compare =
  /** The key exists with exactly this value. */
  | { readonly expectedValue: Bytes }
  /** The key exists and was last modified at this index (a GetResult's kv.modIndex). */
  | { readonly expectedModIndex: number }
  /** The key does not exist (create if absent). */
  | { readonly expectAbsent: true };

export interface CompareAndSwapResult {
  readonly header: ResponseHeader;
  readonly succeeded: boolean;
  /**
   * When the comparison failed: the key's pair as it is (undefined if absent), to compare against
   * next time. When it succeeded: the pair the server returns for it (at present the new pair).
   */
  readonly current: KeyValue | undefined;
}

export interface Member {
  readonly id: number;
  readonly clientAddress: string;
  readonly peerAddress: string;
  /** Leader's view: the highest index known replicated on that member (0 when unknown). */
  readonly matchIndex: number;
}

export type Role = 'follower' | 'pre-candidate' | 'candidate' | 'leader' | (string & Record<never, never>);

export interface NodeStatus {
  /** The endpoint that answered. */
  readonly endpoint: string;
  readonly nodeId: number;
  readonly role: Role;
  readonly term: number;
  /** 0 when no leader is known. */
  readonly leaderId: number;
  /** '' when no leader is known. */
  readonly leaderAddress: string;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly lastIndex: number;
  readonly members: readonly Member[];
  /** Whether this node can currently get writes committed. */
  readonly writable: boolean;
  /** Why not, when writable is false. */
  readonly readOnlyReason: string;
  /** ms since this node last heard from a leader (0 on a leader in contact with a majority). */
  readonly msSinceLeaderContact: number;
  readonly clusterId: string;
  /** Snapshots on this node (0s from a node that predates them). */
  readonly snapshots: SnapshotStatus;
}

export interface SnapshotStatus {
  /** The log's start: entries up to it were compacted or came in a snapshot. */
  readonly logStartIndex: number;
  /** The last snapshot this node took since it started (0: none), and when (Unix ms). */
  readonly lastSnapshotIndex: number;
  readonly lastSnapshotUnixMs: number;
  /** InstallSnapshot transfers since it started: sent as leader, installed as follower, failed. */
  readonly sent: number;
  readonly installed: number;
  readonly failed: number;
  /** Followers a transfer is running to now. */
  readonly sendingTo: readonly number[];
}

/** One row of clusterStatus(): the status of a node, or why it could not be had. */
export type EndpointStatus =
  | { readonly endpoint: string; readonly status: NodeStatus; readonly error?: undefined }
  | { readonly endpoint: string; readonly status?: undefined; readonly error: import('./errors.js').KvError };

export interface LeaderInfo {
  readonly id: number;
  /** The leader's client address as the cluster knows it. */
  readonly address: string;
  readonly term: number;
}

// ---- snapshots (per node: see KvClient.createSnapshot and saveSnapshot) -------------------------

/** Options of the snapshot calls. They go to ONE node: a snapshot is of the node asked. */
export interface SnapshotOptions extends CallOptions {
  /** The node to ask (host:port); may be omitted only when the client has exactly one endpoint. */
  readonly endpoint?: string;
}

/** What createSnapshot() did on the node. */
export interface SnapshotCreated {
  /** The endpoint that answered. */
  readonly endpoint: string;
  readonly nodeId: number;
  /** The snapshot's position: the node's applied index when it was taken. */
  readonly index: number;
  /** The term of the entry at index. */
  readonly term: number;
  /** The node's log starts after this index now (index minus the node's compaction margin, at most). */
  readonly logStartIndex: number;
  /** Entries this call removed from the log. */
  readonly entriesCompacted: number;
  readonly durationMs: number;
}

export interface SaveSnapshotOptions {
  /** The node to copy the snapshot from (host:port); may be omitted only with exactly one endpoint. */
  readonly endpoint?: string;
  /** Bytes per chunk; the node's default (256 KiB) when absent. Above the node's limit: InvalidArgumentError. */
  readonly chunkBytes?: number;
  /** Deadline of the whole transfer, in ms from now. Default: none (see idleTimeoutMs). */
  readonly timeoutMs?: number;
  /**
   * Limit: ms to wait for the first chunk, and for each next chunk the caller asked for, before
   * giving up with TimeoutError. Time the caller spends between chunks does not count. Default: the
   * client's timeoutMs.
   */
  readonly idleTimeoutMs?: number;
}

/**
 * A snapshot being streamed from one node: iterate it (once) for the bytes of the snapshot stream,
 * in the format of src/storage/snapshot-format.ts. The bytes are NOT verified here: a consumer that
 * keeps them checks the stream's trailer (SnapshotDecoder) before trusting them. The stream is
 * flow-controlled (the node reads no faster than the loop takes chunks); breaking out of the loop,
 * or cancel(), ends the transfer. A failure midway throws a KvError from the loop.
 */
export interface SnapshotDownload extends AsyncIterable<Uint8Array> {
  /** The node streaming it. */
  readonly endpoint: string;
  /** The snapshot's applied index and its term. */
  readonly index: number;
  readonly term: number;
  /** The node's estimate of the stream's size in bytes, for progress reports; 0 when unknown. */
  readonly approximateBytes: number;
  /** Ends the transfer; a loop over it then ends with a KvError of code CANCELLED. Idempotent. */
  cancel(): void;
}
