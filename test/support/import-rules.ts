// Shared by the tests that enforce each folder's import rule: which modules a file imports, and its
// code with comments and strings blanked, so prose cannot trip a forbidden-identifier check.

/** Every module specifier a file imports (static `from '...'` and dynamic `import('...')`). */
export function importSpecifiers(src: string): string[] {
  return [...src.matchAll(/(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)].map((m) => m[1]!);
}

/** Source with comments and string contents blanked. */
export function codeOnly(src: string): string {
  return src
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '')
    .replace(/`(?:\\.|[^`\\])*`/g, '``')
    .replace(/'(?:\\.|[^'\\])*'/g, "''")
    .replace(/"(?:\\.|[^"\\])*"/g, '""');
}

/** The rule's violations in one file: imports it does not allow, and forbidden identifiers. */
export function ruleViolations(
  file: string,
  src: string,
  allowed: (specifier: string) => boolean,
  forbidden: ReadonlyArray<readonly [RegExp, string]>,
): string[] {
  const out = importSpecifiers(src)
    .filter((spec) => !allowed(spec))
    .map((spec) => `${file}: imports '${spec}'`);
  const code = codeOnly(src);
  for (const [re, what] of forbidden) if (re.test(code)) out.push(`${file}: uses ${what}`);
  return out;
}
