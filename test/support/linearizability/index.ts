// The linearizability checker's public surface: the history format and check().

export { check, formatReport, type CheckOptions, type CheckResult, type KeyResult, type KeyViolation, type Verdict } from './checker.js';
export {
  describeOp,
  formatHistory,
  formatOp,
  HistoryFormatError,
  parseHistory,
  validateOp,
  type HistoryOp,
  type OpKind,
  type OpResult,
  type OpStatus,
  type ReadConsistency,
} from './history.js';
export type { SearchStrategy } from './search.js';
