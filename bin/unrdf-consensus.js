#!/usr/bin/env node
'use strict';
// unrdf-consensus: operate an @unrdf/consensus cluster (see `unrdf-consensus --help`).
const { main } = require('../lib/cli/commands');

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`unrdf-consensus: ${err && err.stack ? err.stack : err}\n`);
    process.exitCode = 1;
  },
);
