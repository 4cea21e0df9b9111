#!/usr/bin/env node
// `npm test`: builds the addon when missing or stale, then runs the Rust tests, the type check of
// index.d.ts, and the node:test suites in __test__/ (one file at a time: the cluster suites run
// several node processes each, and a 2-core machine should not run two such suites at once).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { buildOrExit: build, hostTarget } = require('./build');

const root = path.resolve(__dirname, '..');

function run(cmd, args) {
  console.log(`\n$ ${cmd} ${args.join(' ')}`);
  const res = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (res.status !== 0) {
    console.error(`\n${cmd} ${args.join(' ')} failed (status ${res.status}, signal ${res.signal})`);
    process.exit(res.status || 1);
  }
}

build();
// `napi build` always names the target, so its artifacts live in target/<triple>/release; the
// Rust tests name it too and reuse the dependencies compiled there instead of building them again.
const host = hostTarget();
run('cargo', ['test', '--release', '--workspace', ...(host ? ['--target', host.triple] : [])]);
run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '__test__/types/tsconfig.json']);
const files = fs
  .readdirSync(path.join(root, '__test__'))
  .filter((f) => f.endsWith('.test.js'))
  .sort()
  .map((f) => path.join('__test__', f));
run(process.execPath, ['--test', '--test-concurrency=1', ...files]);
