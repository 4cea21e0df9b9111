#!/usr/bin/env node
// Builds the native addon (release profile) when it is missing or older than its sources, and
// places it where lib/native.js looks first: consensus.<platform>.node in the package root.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { platformSuffix } = require('../lib/platform');

const root = path.resolve(__dirname, '..');
const target = path.join(root, `consensus.${platformSuffix()}.node`);

function newestSourceMtime() {
  let newest = 0;
  const visit = (p) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(p)) visit(path.join(p, name));
    } else {
      newest = Math.max(newest, st.mtimeMs);
    }
  };
  for (const p of ['src', 'Cargo.toml', 'Cargo.lock', 'build.rs']) {
    const full = path.join(root, p);
    if (fs.existsSync(full)) visit(full);
  }
  return newest;
}

function isStale() {
  if (!fs.existsSync(target)) return true;
  return fs.statSync(target).mtimeMs < newestSourceMtime();
}

function build({ force = false } = {}) {
  if (!force && !isStale()) return target;
  console.log(`building native addon (release) -> ${path.basename(target)}`);
  const res = spawnSync('cargo', ['build', '--release', '--lib'], { cwd: root, stdio: 'inherit' });
  if (res.status !== 0) {
    throw new Error(`cargo build failed with status ${res.status}`);
  }
  const libName =
    process.platform === 'win32'
      ? 'unrdf_consensus.dll'
      : process.platform === 'darwin'
        ? 'libunrdf_consensus.dylib'
        : 'libunrdf_consensus.so';
  const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
  const built = path.join(targetDir, 'release', libName);
  // Copy to a temporary name then rename: a running process keeps its mapped copy intact.
  const tmp = `${target}.tmp`;
  fs.copyFileSync(built, tmp);
  fs.renameSync(tmp, target);
  return target;
}

module.exports = { build, isStale };

if (require.main === module) {
  try {
    build({ force: process.argv.includes('--force') });
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
