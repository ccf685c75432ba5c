// The public surface of the storage layer.
export { SnapshotFormatError } from '../errors.js';
export {
  NodeStore,
  type Change,
  type DataScan,
  type NodeStoreOptions,
  type PersistBatch,
  type SnapshotInstall,
  type SnapshotReader,
  type SnapshotStaging,
  type StateWrite,
} from './node-store.js';
export { FORMAT_VERSION } from './keys.js';
export {
  encodeSnapshot,
  SnapshotDecoder,
  type SnapshotHeader,
  type SnapshotLimits,
  type SnapshotRecord,
  type SnapshotSummary,
} from './snapshot-format.js';
