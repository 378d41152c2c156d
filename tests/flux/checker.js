// The official Flux checker (libflux compiled to WebAssembly, @influxdata/flux-lsp-node) as a
// long-lived process for the tests: one JSON request per line on stdin, one JSON answer per line
// on stdout, in order. Request: {"script": "...", "ast": false}. Answer: {"valid": bool} where
// `valid` is `new Flux(script).is_valid()` (a semantic check: unknown functions, argument types),
// plus "ast" (the parser's AST) when asked, or {"error": "..."} if the checker itself threw.
'use strict';
const readline = require('readline');
const flux = require('@influxdata/flux-lsp-node');

const lines = readline.createInterface({ input: process.stdin, terminal: false });
lines.on('line', (line) => {
  let answer;
  try {
    const request = JSON.parse(line);
    const checked = new flux.Flux(request.script);
    answer = { valid: checked.is_valid() === true };
    checked.free();
    if (request.ast) {
      answer.ast = flux.parse(request.script);
    }
  } catch (error) {
    answer = { error: String(error) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
});
