// The seed of a randomized test: SEED=<n> replays one run; otherwise a fresh seed, printed with the
// command that replays it.

export function seedOf(name: string): number {
  const seed = process.env.SEED !== undefined ? Number(process.env.SEED) : Math.floor(Math.random() * 2 ** 31);
  console.log(`${name}: seed ${seed} (replay with SEED=${seed})`);
  return seed;
}
