// Waiting for a condition with a deadline, instead of sleeping for a fixed time.

/**
 * Resolves once `cond` returns true (it may be async), checking every `intervalMs`. Rejects after
 * `timeoutMs` with `what` (or the condition's source) in the message, so a failed wait says what it
 * was waiting for.
 */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  what?: string,
  intervalMs = 5,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() >= deadline) {
      throw new Error(`waitFor: timed out after ${timeoutMs} ms waiting for ${what ?? cond.toString()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
