// Errors of the cluster script. Like RaftKvError (src/errors.ts) each carries a stable code, but these
// are conditions of the local tool (a busy port, a node that would not start), not of the store, so
// they have their own small set of codes. The CLI prints one clear line (plus details) and exits 1.

export type ClusterErrorCode =
  /** No cluster.json in the folder: nothing was started there. */
  | 'NOT_STARTED'
  /** A NODE argument names no member of the cluster. */
  | 'UNKNOWN_NODE'
  /** The node exists but no process of it runs (or it runs when the command needs it stopped). */
  | 'NOT_RUNNING'
  | 'ALREADY_RUNNING'
  | 'PORT_BUSY'
  /** A node exited, or never answered, while the script waited for it. Details hold its log tail. */
  | 'NODE_START_FAILED'
  | 'NO_LEADER'
  /** The folder holds something other than a cluster made by this script: it is left alone. */
  | 'NOT_A_CLUSTER_DIR'
  /** The options ask for another cluster than the one in the folder (other size or ports). */
  | 'CLUSTER_MISMATCH'
  | 'INVALID_ARGUMENT'
  | 'TIMEOUT'
  /** SIGINT/SIGTERM arrived while the script was starting nodes; it stopped them again. */
  | 'INTERRUPTED'
  /** A running node did not take a partition, heal or clock rate (the call failed, or it lacks FaultInjection). */
  | 'FAULT_INJECTION_FAILED'
  /** `restore FILE`: the file cannot be read or fails verification; nothing was changed. */
  | 'SNAPSHOT_INVALID'
  /** `restore FILE`: creating a node's data directory from the file failed; the old data is kept. */
  | 'RESTORE_FAILED';

export class ClusterError extends Error {
  readonly code: ClusterErrorCode;
  /** Extra lines to print after the message (for example the last lines of a node's log). */
  readonly details: readonly string[];
  constructor(code: ClusterErrorCode, message: string, details: readonly string[] = []) {
    super(message);
    this.code = code;
    this.details = details;
    this.name = new.target.name;
  }
}
