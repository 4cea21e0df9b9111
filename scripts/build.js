#!/usr/bin/env node
// Builds the native addon with `napi build` when it is missing or older than its sources:
// lib/consensus.<platform>.node, the loader lib/native.js and the binding's types lib/native.d.ts,
// both generated from the Rust code. The loader is then adjusted (see patchLoader) so that it never
// reads process.report and so that a missing binary says how to get one.
//
// `build({ dist: true })` builds the binary that is published instead: the `dist` profile (LTO,
// stripped) and, for Linux x64, linked against glibc 2.17 with cargo-zigbuild so that it loads on
// every distribution of the last decade. It goes to its own directory (DIST_DIR) and leaves the
// everyday build alone.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const lib = path.join(root, 'lib');
const LOADER = 'native.js';
const DIST_DIR = path.join(root, 'target', 'napi-dist');
/** glibc 2.17 (CentOS 7, 2012) is the floor napi-rs prebuilt binaries target. */
const GLIBC_FLOOR = '2.17';

/** The napi-rs description of the machine's Rust host (triple, platformArchABI, ...), or null without rustc. */
function hostTarget() {
  const rustc = spawnSync('rustc', ['-vV'], { encoding: 'utf8' });
  if (rustc.error || rustc.status !== 0) return null;
  const host = /^host: (\S+)$/m.exec(rustc.stdout);
  return host ? require('@napi-rs/cli').parseTriple(host[1]) : null;
}

function binaryName() {
  return JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).napi.binaryName;
}

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
  for (const p of ['src', 'patches', 'Cargo.toml', 'Cargo.lock', 'build.rs']) {
    const full = path.join(root, p);
    if (fs.existsSync(full)) visit(full);
  }
  return newest;
}

function isStale(file) {
  if (!file || !fs.existsSync(file)) return true;
  return fs.statSync(file).mtimeMs < newestSourceMtime();
}

/** What to tell someone who builds from source without Rust: what is missing and how to get it. */
const NO_RUST = [
  'Building @unrdf/consensus from source needs a Rust toolchain, and `cargo` was not found on PATH.',
  'Install one from https://rustup.rs (for example: curl --proto =https --tlsv1.2 -sSf https://sh.rustup.rs | sh),',
  'open a new shell, and run the command again. The first build compiles every dependency and takes a few',
  'minutes; later builds take seconds. Installs from npm need no Rust: they use a prebuilt binary.',
].join('\n');

const NO_ZIG = [
  'The published Linux binary is linked against glibc 2.17 with cargo-zigbuild, and it is missing:',
  '  cargo install --locked cargo-zigbuild     and     pip install ziglang   (or zig on PATH)',
].join('\n');

class BuildError extends Error {}

/**
 * The generated loader, adjusted in two places. Each anchor is checked so that a newer
 * @napi-rs/cli that generates different code fails the build instead of silently losing a fix.
 */
function patchLoader(source, { packageName, targets }) {
  // glibc or musl: the generated code reads /usr/bin/ldd and, when that file is missing (slim
  // containers), falls back to process.report.getReport(), which can stall start-up for seconds.
  // The dynamic loader's file name answers the same question without it.
  const reportFallback = '    if (musl === null) {\n      musl = isMuslFromReport()\n    }\n';
  const loaderFile = [
    '    if (musl === null) {',
    "      // Patched after generation (scripts/build.js): musl systems have /lib/ld-musl-<arch>.so.1;",
    '      // process.report is never read, it can take seconds.',
    '      try {',
    "        musl = require('fs').readdirSync('/lib').some((f) => f.startsWith('ld-musl-'))",
    '      } catch {',
    '        musl = null',
    '      }',
    '    }',
    '',
  ].join('\n');
  // The generated message blames npm and advises deleting the lock file; name instead what was
  // looked for, and how an installed package gets it (an installed package has no build script).
  const missing = /\nif \(!nativeBinding\) \{\n {2}if \(loadErrors\.length > 0\) \{\n[\s\S]*?\n {2}throw new Error\(`Failed to load native binding`\)\n\}\n/;
  const ourMissing = `
if (!nativeBinding) {
  // Patched after generation (scripts/build.js): what was looked for and how to get it.
  const abi = process.platform === 'linux' ? (isMusl() ? 'musl' : 'gnu') : process.platform === 'win32' ? 'msvc' : ''
  const platformArchAbi = [process.platform, process.arch, abi].filter(Boolean).join('-')
  const platformPackage = ${JSON.stringify(packageName)} + '-' + platformArchAbi
  const published = ${JSON.stringify(targets)}
  const how = published.includes(platformArchAbi)
    ? 'npm installs it as an optional dependency: reinstall ' + ${JSON.stringify(packageName)} +
      ' with optional dependencies enabled (not with --omit=optional, --no-optional or --ignore-optional);' +
      ' if npm skipped it anyway (https://github.com/npm/cli/issues/4828), remove node_modules and the lock file and install again.'
    : 'no prebuilt binary is published for this platform (there are: ' + published.join(', ') + ').'
  const error = new Error(
    ${JSON.stringify(packageName)} + ' found no native binary for platform ' + process.platform + ', arch ' + process.arch +
      (abi ? ', abi ' + abi : '') + ': it looked for the package ' + platformPackage + '; ' + how +
      (loadErrors.length > 0 ? ' Load errors: ' + loadErrors.map((e) => String((e && e.message) || e).split('\\n')[0]).join(' | ') : ''),
  )
  error.code = 'ERR_NATIVE_MISSING'
  error.cause = createLoadErrorChain(loadErrors)
  throw error
}
`;
  if (!source.includes(reportFallback) || !missing.test(source)) {
    throw new BuildError(
      `the loader generated by @napi-rs/cli changed shape and ${path.relative(root, __filename)} can no longer ` +
        'adjust it (process.report fallback, missing-binary error); update patchLoader for this version',
    );
  }
  return source.replace(reportFallback, loaderFile).replace(missing, ourMissing);
}

function runNapi(args, env = process.env) {
  const cli = path.join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');
  if (!fs.existsSync(cli)) throw new BuildError('@napi-rs/cli is not installed: run `npm install` first');
  const res = spawnSync(process.execPath, [cli, 'build', ...args], { cwd: root, stdio: 'inherit', env });
  if (res.status !== 0) {
    const how = res.signal ? `was stopped by ${res.signal}` : `failed (exit status ${res.status}); the messages are above`;
    throw new BuildError(`napi build ${how}`);
  }
}

function hasZigbuild() {
  const zigbuild = spawnSync('cargo', ['zigbuild', '--help'], { stdio: 'ignore' });
  if (zigbuild.status !== 0) return false;
  const zig = spawnSync('zig', ['version'], { stdio: 'ignore' });
  if (zig.status === 0) return true;
  // cargo-zigbuild also finds zig as the `ziglang` Python package.
  return spawnSync('python3', ['-m', 'ziglang', 'version'], { stdio: 'ignore' }).status === 0;
}

/** The release-profile addon for this machine, with the generated loader next to it. */
function build({ force = false } = {}) {
  const host = hostTarget();
  const target = host && path.join(lib, `${binaryName()}.${host.platformArchABI}.node`);
  if (!force && !isStale(target)) return target;
  if (!host) throw new BuildError(NO_RUST);
  const first = !fs.existsSync(path.join(process.env.CARGO_TARGET_DIR || path.join(root, 'target'), host.triple, 'release'));
  console.log(
    `building native addon (release) -> lib/${path.basename(target)}` +
      (first ? ': the first build compiles every dependency and takes a few minutes' : ''),
  );
  runNapi(['--platform', '--release', '--output-dir', 'lib', '--js', LOADER, '--dts', 'native.d.ts']);
  const loader = path.join(lib, LOADER);
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const { parseTriple } = require('@napi-rs/cli');
  const targets = manifest.napi.targets.map((t) => parseTriple(t).platformArchABI);
  fs.writeFileSync(loader, patchLoader(fs.readFileSync(loader, 'utf8'), { packageName: manifest.name, targets }));
  // napi build leaves an unchanged binary's mtime alone; the staleness check compares against it.
  const now = new Date();
  fs.utimesSync(target, now, now);
  return target;
}

/**
 * The binary that is published for this machine's platform, in DIST_DIR. On Linux x64 (glibc) it is
 * linked against glibc 2.17 through cargo-zigbuild (napi build --cross-compile).
 */
function buildDist() {
  const host = hostTarget();
  if (!host) throw new BuildError(NO_RUST);
  const args = ['--platform', '--profile', 'dist', '--output-dir', path.relative(root, DIST_DIR), '--no-js'];
  // Relative to --output-dir: the binding's types are generated again and left there.
  args.push('--dts', 'native.d.ts');
  if (host.triple === 'x86_64-unknown-linux-gnu') {
    if (!hasZigbuild()) throw new BuildError(NO_ZIG);
    args.push('--cross-compile', '--target', `${host.triple}.${GLIBC_FLOOR}`);
  }
  fs.mkdirSync(DIST_DIR, { recursive: true });
  console.log(`building the published addon (dist profile: LTO, stripped) for ${host.platformArchABI}`);
  runNapi(args);
  return path.join(DIST_DIR, `${binaryName()}.${host.platformArchABI}.node`);
}

/** build() for scripts: a failure is reported as its message, without a stack trace, and exits. */
function buildOrExit(options) {
  try {
    return options && options.dist ? buildDist() : build(options);
  } catch (err) {
    if (!(err instanceof BuildError)) throw err;
    console.error(err.message);
    process.exit(1);
  }
}

module.exports = { build, buildDist, buildOrExit, hostTarget, patchLoader, isStale, BuildError, DIST_DIR, GLIBC_FLOOR };

if (require.main === module) {
  buildOrExit({ force: process.argv.includes('--force'), dist: process.argv.includes('--dist') });
}
