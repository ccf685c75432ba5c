// The public surface of the KV state machine.
export * from './command.js';
export { type KvRecord } from './record.js';
export { type SessionMeta } from './session-table.js';
export {
  DEFAULT_CACHE_BYTES,
  DEFAULT_MAX_SESSIONS,
  DEFAULT_RANGE_LIMIT,
  DEFAULT_SESSION_TTL_MS,
  KvStateMachine,
  type KeyRange,
  type KvStateMachineOptions,
  type RangeItem,
  type RangeOptions,
  type RangeResult,
} from './state-machine.js';
