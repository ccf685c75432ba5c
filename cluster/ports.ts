// Loopback ports for the nodes: whether one is free, and free ones chosen by the OS.

import { createServer, type Server } from 'node:net';

function listen(port: number, host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ port, host, exclusive: true }, () => resolve(s));
  });
}

function close(s: Server): Promise<void> {
  return new Promise((resolve) => s.close(() => resolve()));
}

/** Whether `host:port` can be bound now. (A check, not a reservation: kvnode binds it later.) */
export async function isPortFree(port: number, host: string): Promise<boolean> {
  try {
    await close(await listen(port, host));
    return true;
  } catch {
    return false;
  }
}

/** `n` distinct ports the OS reports free: binds port 0 n times, reads the ports back, closes. */
export async function freePorts(n: number, host: string): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => listen(0, host)));
  // All are bound before any is closed, so the ports differ from each other.
  const ports = servers.map((s) => {
    const addr = s.address();
    if (addr === null || typeof addr === 'string') throw new Error('freePorts: no TCP address');
    return addr.port;
  });
  await Promise.all(servers.map(close));
  return ports;
}
