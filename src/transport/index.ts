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
  type DropCounts,
  type LinkFilter,
  type PeerStats,
  type PeerTransportOptions,
  type TransportStats,
} from './peer-transport.js';
export { decodeBatch, encodeBatch, decodeMessage, encodeMessage, encodedMessageBytes, MalformedFrameError } from './codec.js';
export { PEER_PROTO_PATH, PEER_SERVICE_NAME, peerPackageDefinition } from './peer-service.js';
export type { TransportLogger } from './logger.js';
