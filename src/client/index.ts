// The public surface of the client library.
export { DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
export {
  KvClient,
  DEFAULT_MAX_QUEUED_WRITES,
  DEFAULT_MAX_RETRIES,
  DEFAULT_TIMEOUT_MS,
  type Clock,
  type KvClientOptions,
} from './kv-client.js';
export {
  InvalidArgumentError,
  isRetryable,
  KvError,
  NoQuorumError,
  NotLeaderError,
  ResourceExhaustedError,
  TimeoutError,
  TooStaleError,
  UnavailableError,
  type KvErrorCode,
} from './errors.js';
export {
  KeyValue,
  type Bytes,
  type CallOptions,
  type Compare,
  type CompareAndSwapResult,
  type Consistency,
  type DeleteResult,
  type EndpointStatus,
  type GetResult,
  type KeyRange,
  type LeaderInfo,
  type Member,
  type NodeStatus,
  type PutResult,
  type RangeOptions,
  type RangeResult,
  type ReadOptions,
  type ResponseHeader,
  type Role,
  type WriteOptions,
} from './types.js';
