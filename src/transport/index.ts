// The public surface of the peer transport.
export {
  PeerTransport,
  peerServerOptions,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_MAX_QUEUE_MESSAGES,
  DEFAULT_MAX_QUEUE_BYTES,
  DEFAULT_RECONNECT_BACKOFF_MIN_MS,
  DEFAULT_RECONNECT_BACKOFF_MAX_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_CLOSE_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_TIME_MS,
  DEFAULT_KEEPALIVE_TIMEOUT_MS,
  DEFAULT_MAX_SNAPSHOT_CHUNKS_IN_FLIGHT,
  DEFAULT_MAX_SNAPSHOT_CHUNK_BYTES,
  DEFAULT_SNAPSHOT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_SNAPSHOT_TRANSFERS,
  type DropCounts,
  type LinkFilter,
  type PeerStats,
  type PeerTransportOptions,
  type SnapshotStats,
  type TransportStats,
} from './peer-transport.js';
export { SnapshotTransferError, type SnapshotFailureKind } from './snapshot-sender.js';
export type { SnapshotHandler, SnapshotSink } from './snapshot-receiver.js';
export {
  decodeBatch,
  encodeBatch,
  decodeMessage,
  encodeMessage,
  encodedMessageBytes,
  MalformedFrameError,
  type WireMessage,
  type WireMessageType,
} from './codec.js';
export { PEER_PROTO_PATH, PEER_SERVICE_NAME, peerPackageDefinition, SNAPSHOT_CHUNK_OVERHEAD_BYTES } from './peer-service.js';
export type { TransportLogger } from './logger.js';
export { NodeListener, parseHostPort, type NodeListenerOptions, type PeerConnectionHandler } from './node-listener.js';
