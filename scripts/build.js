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

/** What to tell someone who builds from source without Rust: what is missing and how to get it. */
const NO_RUST = [
  'Building @unrdf/consensus from source needs a Rust toolchain, and `cargo` was not found on PATH.',
  'Install one from https://rustup.rs (for example: curl --proto =https --tlsv1.2 -sSf https://sh.rustup.rs | sh),',
  'open a new shell, and run the command again. The first build compiles every dependency and takes a few',
  'minutes; later builds take seconds. Installs from npm need no Rust: they use a prebuilt binary.',
].join('\n');

class BuildError extends Error {}

function build({ force = false } = {}) {
  if (!force && !isStale()) return target;
  const cargo = spawnSync('cargo', ['--version'], { encoding: 'utf8' });
  if (cargo.error || cargo.status !== 0) throw new BuildError(NO_RUST);
  const first = !fs.existsSync(path.join(process.env.CARGO_TARGET_DIR || path.join(root, 'target'), 'release'));
  console.log(
    `building native addon (release) -> ${path.basename(target)}` +
      (first ? ': the first build compiles every dependency and takes a few minutes' : ''),
  );
  const res = spawnSync('cargo', ['build', '--release', '--lib'], { cwd: root, stdio: 'inherit' });
  if (res.status !== 0) {
    const how = res.signal ? `was stopped by ${res.signal}` : `failed (exit status ${res.status}); the compiler's messages are above`;
    throw new BuildError(`cargo build ${how}`);
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

/** build() for scripts: a failure is reported as its message, without a stack trace, and exits. */
function buildOrExit(options) {
  try {
    return build(options);
  } catch (err) {
    if (!(err instanceof BuildError)) throw err;
    console.error(err.message);
    process.exit(1);
  }
}

module.exports = { build, buildOrExit, isStale, BuildError };

if (require.main === module) buildOrExit({ force: process.argv.includes('--force') });
