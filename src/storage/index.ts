// The public surface of the storage layer.
export { NodeStore, type Change, type DataScan, type NodeStoreOptions, type PersistBatch, type StateWrite } from './node-store.js';
export { FORMAT_VERSION } from './keys.js';
