// The raw TCP form of the peer stream: what a node sends on a plain TCP connection to a peer's
// address to carry Raft messages, instead of a gRPC client stream. It shares the port with gRPC:
// the listener (peer-listener.ts) reads the first bytes of each connection and hands anything that
// does not start with PEER_WIRE_MAGIC to the gRPC server (node-listener.ts). It exists because a
// gRPC stream message costs several times what a socket write does when messages come one per
// wake-up, as they do at one client (bench/grpc-floor.ts).
//
//   the connecting node sends     hello  frame*
//   the accepting node sends      magic:"RKVP"  version:u8 (= 1)  status  keepalive*  [status]
//   hello      = magic:"RKVP"  version:u8 (= 1)  bodyLength:u16  body
//   body       = from:u32  to:u32  clusterIdLength:u16  clusterId (UTF-8)
//   status     = code:u8 (0 accepted, else a gRPC status code)  detailsLength:u16  details (UTF-8)
//   keepalive  = a status with code 0, every keepaliveTimeMs: the sender's proof that the peer lives
//   frame      = payloadLength:u32  payload     (a codec batch, see codec.ts)
//
// The first status says accepted or refused; a later status with a code other than 0 says why the
// accepting node ends the connection. Every integer is big-endian. Frames flow one way only; Raft's
// answers travel on the answering node's own connection. A payload longer than the receiver's
// maxMessageBytes ends the connection. A reply that does not open with the magic and version comes
// from something that does not speak this wire (a node from before it, whose gRPC server answers
// with HTTP/2), and the sender says so.

/** The first bytes of a peer connection. An HTTP/2 client preface starts "PRI ", so they never clash. */
export const PEER_WIRE_MAGIC = Buffer.from('RKVP', 'latin1');
export const PEER_WIRE_VERSION = 1;
/** magic, version, bodyLength. */
export const HELLO_HEADER_BYTES = PEER_WIRE_MAGIC.length + 1 + 2;
/** What the accepting node's reply opens with: the magic and the version. */
export const REPLY_PREFIX: Buffer = Buffer.concat([PEER_WIRE_MAGIC, Buffer.from([PEER_WIRE_VERSION])]);
/** Limit on a hello's body: two ids, a length and a cluster id of at most MAX_CLUSTER_ID_BYTES. */
export const MAX_CLUSTER_ID_BYTES = 1024;
export const MAX_HELLO_BODY_BYTES = 4 + 4 + 2 + MAX_CLUSTER_ID_BYTES;
/** Limit on a status's details (longer ones are cut). */
export const MAX_STATUS_DETAILS_BYTES = 1024;
export const STATUS_HEADER_BYTES = 1 + 2;
export const FRAME_HEADER_BYTES = 4;
/** The largest node id a hello can carry. */
export const MAX_WIRE_NODE_ID = 0xffff_ffff;

export interface Hello {
  readonly from: number;
  readonly to: number;
  readonly clusterId: string;
}

/** A connection's status: code 0 accepts, any other code (a gRPC status code) refuses or ends it. */
export interface WireStatus {
  readonly code: number;
  readonly details: string;
}

/** Bytes that do not follow the wire format, or exceed one of its limits. */
export class PeerWireError extends Error {
  /** FrameDecoder: the whole payloads the same push split off before the bad length. */
  readonly payloadsBefore: readonly Buffer[];
  constructor(message: string, payloadsBefore: readonly Buffer[] = []) {
    super(message);
    this.name = 'PeerWireError';
    this.payloadsBefore = payloadsBefore;
  }
}

/** Whether `head` (at least PEER_WIRE_MAGIC.length bytes) opens a raw peer connection. */
export function isPeerWireHead(head: Uint8Array): boolean {
  if (head.length < PEER_WIRE_MAGIC.length) return false;
  for (let i = 0; i < PEER_WIRE_MAGIC.length; i++) if (head[i] !== PEER_WIRE_MAGIC[i]) return false;
  return true;
}

export function encodeHello(h: Hello): Buffer {
  for (const [what, id] of [['from', h.from], ['to', h.to]] as const) {
    if (!Number.isSafeInteger(id) || id < 1 || id > MAX_WIRE_NODE_ID) {
      throw new RangeError(`peer wire: hello ${what} must be a node id in [1, ${MAX_WIRE_NODE_ID}], got ${id}`);
    }
  }
  const cluster = Buffer.from(h.clusterId, 'utf8');
  if (cluster.length > MAX_CLUSTER_ID_BYTES) {
    throw new RangeError(`peer wire: cluster id of ${cluster.length} bytes (limit MAX_CLUSTER_ID_BYTES=${MAX_CLUSTER_ID_BYTES})`);
  }
  const bodyBytes = 4 + 4 + 2 + cluster.length;
  const b = Buffer.allocUnsafe(HELLO_HEADER_BYTES + bodyBytes);
  PEER_WIRE_MAGIC.copy(b, 0);
  let at = PEER_WIRE_MAGIC.length;
  b[at++] = PEER_WIRE_VERSION;
  b.writeUInt16BE(bodyBytes, at);
  at += 2;
  b.writeUInt32BE(h.from, at);
  b.writeUInt32BE(h.to, at + 4);
  b.writeUInt16BE(cluster.length, at + 8);
  cluster.copy(b, at + 10);
  return b;
}

/**
 * Reads a hello from the start of `buf`: the hello and the bytes it took, or undefined when `buf` is
 * too short yet. Throws PeerWireError on a bad magic, version, length or id.
 */
export function decodeHello(buf: Uint8Array): { hello: Hello; bytes: number } | undefined {
  if (buf.length >= PEER_WIRE_MAGIC.length && !isPeerWireHead(buf)) throw new PeerWireError('not a raftkv peer connection (bad magic)');
  if (buf.length < HELLO_HEADER_BYTES) return undefined;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const version = b[PEER_WIRE_MAGIC.length]!;
  if (version !== PEER_WIRE_VERSION) throw new PeerWireError(`unknown peer wire version ${version} (this node speaks ${PEER_WIRE_VERSION})`);
  const bodyBytes = b.readUInt16BE(PEER_WIRE_MAGIC.length + 1);
  if (bodyBytes < 10 || bodyBytes > MAX_HELLO_BODY_BYTES) {
    throw new PeerWireError(`hello body of ${bodyBytes} bytes (must be 10 to ${MAX_HELLO_BODY_BYTES})`);
  }
  if (b.length < HELLO_HEADER_BYTES + bodyBytes) return undefined;
  const at = HELLO_HEADER_BYTES;
  const from = b.readUInt32BE(at);
  const to = b.readUInt32BE(at + 4);
  const clusterBytes = b.readUInt16BE(at + 8);
  if (10 + clusterBytes !== bodyBytes) throw new PeerWireError(`hello cluster id of ${clusterBytes} bytes in a body of ${bodyBytes}`);
  if (from === 0 || to === 0) throw new PeerWireError('hello with node id 0 (node ids are positive)');
  let clusterId: string;
  try {
    clusterId = new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(at + 10, at + 10 + clusterBytes));
  } catch {
    throw new PeerWireError('hello cluster id is not valid UTF-8');
  }
  return { hello: { from, to, clusterId }, bytes: HELLO_HEADER_BYTES + bodyBytes };
}

export function encodeStatus(s: WireStatus): Buffer {
  if (!Number.isInteger(s.code) || s.code < 0 || s.code > 255) throw new RangeError(`peer wire: status code must be in [0, 255], got ${s.code}`);
  let details = Buffer.from(s.details, 'utf8');
  if (details.length > MAX_STATUS_DETAILS_BYTES) details = details.subarray(0, MAX_STATUS_DETAILS_BYTES);
  const b = Buffer.allocUnsafe(STATUS_HEADER_BYTES + details.length);
  b[0] = s.code;
  b.writeUInt16BE(details.length, 1);
  details.copy(b, STATUS_HEADER_BYTES);
  return b;
}

/** Reads a status from the start of `buf`, or undefined when `buf` is too short yet. */
export function decodeStatus(buf: Uint8Array): { status: WireStatus; bytes: number } | undefined {
  if (buf.length < STATUS_HEADER_BYTES) return undefined;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const length = b.readUInt16BE(1);
  if (length > MAX_STATUS_DETAILS_BYTES) throw new PeerWireError(`status details of ${length} bytes (limit ${MAX_STATUS_DETAILS_BYTES})`);
  if (b.length < STATUS_HEADER_BYTES + length) return undefined;
  // Invalid UTF-8 in details is replaced, not refused: they are only ever logged.
  const details = b.toString('utf8', STATUS_HEADER_BYTES, STATUS_HEADER_BYTES + length);
  return { status: { code: b[0]!, details }, bytes: STATUS_HEADER_BYTES + length };
}

/** The accepting node's first status, with the reply's prefix. */
export function encodeReply(s: WireStatus): Buffer {
  return Buffer.concat([REPLY_PREFIX, encodeStatus(s)]);
}

/** A frame's 4-byte length prefix. */
export function frameHeader(payloadBytes: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  b.writeUInt32BE(payloadBytes, 0);
  return b;
}

/**
 * Splits a byte stream into frame payloads. A payload is a copy when its frame spans chunks, and a
 * view of the chunk when it lies within one: the caller must not overwrite a chunk it pushed while
 * it holds payloads from it (a socket's 'data' chunks are never reused). What the decoder keeps of
 * an incomplete frame is always a copy. A length above maxPayloadBytes throws PeerWireError before
 * any of the payload is buffered; its payloadsBefore holds the payloads that push completed first.
 */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** The length of the frame being assembled, once its header is in. */
  private need: number | undefined;

  constructor(private readonly maxPayloadBytes: number) {}

  /** Bytes held for an incomplete frame. */
  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  /** Whether the stream stopped inside a frame: a header or payload has begun and is not complete. */
  get inFrame(): boolean {
    return this.pendingBytes > 0 || this.need !== undefined;
  }

  /** Adds a chunk; returns the payloads it completes, in order. */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let at = 0;
    if (this.pendingBytes > 0) {
      // Complete the frame in progress first.
      for (;;) {
        if (this.need === undefined) {
          const take = Math.min(FRAME_HEADER_BYTES - this.pendingBytes, chunk.length - at);
          this.pending.push(Buffer.from(chunk.subarray(at, at + take)));
          this.pendingBytes += take;
          at += take;
          if (this.pendingBytes < FRAME_HEADER_BYTES) return out;
          this.need = this.checkLength(Buffer.concat(this.pending, FRAME_HEADER_BYTES).readUInt32BE(0), out);
          this.pending = [];
          this.pendingBytes = 0;
          if (this.need === 0) {
            out.push(Buffer.alloc(0));
            this.need = undefined;
            break;
          }
          if (at === chunk.length) return out;
        }
        const want = this.need - this.pendingBytes;
        const take = Math.min(want, chunk.length - at);
        this.pending.push(Buffer.from(chunk.subarray(at, at + take)));
        this.pendingBytes += take;
        at += take;
        if (this.pendingBytes < this.need) return out;
        out.push(Buffer.concat(this.pending, this.need));
        this.pending = [];
        this.pendingBytes = 0;
        this.need = undefined;
        break;
      }
    } else if (this.need !== undefined) {
      // A header arrived alone at the end of the last chunk.
      const take = Math.min(this.need, chunk.length);
      if (take === this.need) {
        out.push(chunk.subarray(0, take));
        this.need = undefined;
        at = take;
      } else {
        this.pending.push(Buffer.from(chunk));
        this.pendingBytes = chunk.length;
        return out;
      }
    }
    // Whole frames within the chunk.
    while (chunk.length - at >= FRAME_HEADER_BYTES) {
      const length = this.checkLength(chunk.readUInt32BE(at), out);
      if (chunk.length - at - FRAME_HEADER_BYTES < length) {
        this.need = length;
        at += FRAME_HEADER_BYTES;
        if (at < chunk.length) {
          this.pending.push(Buffer.from(chunk.subarray(at)));
          this.pendingBytes = chunk.length - at;
        }
        return out;
      }
      out.push(chunk.subarray(at + FRAME_HEADER_BYTES, at + FRAME_HEADER_BYTES + length));
      at += FRAME_HEADER_BYTES + length;
    }
    if (at < chunk.length) {
      this.pending.push(Buffer.from(chunk.subarray(at)));
      this.pendingBytes = chunk.length - at;
    }
    return out;
  }

  private checkLength(length: number, before: readonly Buffer[]): number {
    if (length > this.maxPayloadBytes) {
      throw new PeerWireError(`peer frame of ${length} bytes (limit maxMessageBytes=${this.maxPayloadBytes})`, before);
    }
    return length;
  }
}
