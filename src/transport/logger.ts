// What the transport logs through. The node passes its own logger; the default is silent.

export interface TransportLogger {
  info(message: string): void;
  warn(message: string): void;
}

export const silentLogger: TransportLogger = {
  info: () => {},
  warn: () => {},
};
