'use strict';
// The published form: the main package and the linux-x64-gnu binary package, packed with
// `npm pack`, install into an empty directory and work there with no Rust toolchain on PATH. The
// binary is the published build: small, and loadable on glibc 2.17 and later.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pack } = require('../scripts/pack');
const { hostTarget, GLIBC_FLOOR } = require('../scripts/build');

// A ceiling that catches a published build which lost LTO or stripping (the release profile's
// binary is over 10 MB). With unwinding panics and the current dependencies the dist build is 6.7 MB;
// reaching 5 MB needs fewer dependencies (tracing-subscriber's env-filter pulls in regex) or
// panic = "abort", which would turn a panic in any background task into the end of the process.
const MAX_BINARY_BYTES = 7 * 1024 * 1024;

/** The newest glibc symbol version the binary needs, from its dynamic symbol table. */
function newestGlibcVersion(binary) {
  const objdump = spawnSync('objdump', ['-T', binary], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  assert.equal(objdump.status, 0, `objdump (binutils) is needed to read the binary's glibc versions: ${objdump.error || objdump.stderr}`);
  const versions = [...new Set(objdump.stdout.match(/GLIBC_[0-9.]+/g))].map((v) => v.slice('GLIBC_'.length));
  assert.ok(versions.length > 0, 'the binary links against glibc');
  return versions.sort(compareVersions).at(-1);
}

function compareVersions(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    if ((pa[i] || 0) !== (pb[i] || 0)) return (pa[i] || 0) - (pb[i] || 0);
  }
  return 0;
}

// Two clean builds of the whole dependency tree can happen here (cargo-zigbuild, LTO): on a busy
// 2-core machine that is well over ten minutes.
test('npm pack of the main and platform packages installs and runs without a Rust toolchain', { timeout: 1800000 }, (t) => {
  const host = hostTarget();
  if (!host || host.platformArchABI !== 'linux-x64-gnu') {
    t.skip(`only linux-x64-gnu has a binary package built here (this is ${host ? host.platformArchABI : 'a machine without rustc'})`);
    return;
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'consensus-pack-'));
  try {
    const { main, platform, binary } = pack(path.join(work, 'tarballs'));
    const size = fs.statSync(binary).size;
    assert.ok(size <= MAX_BINARY_BYTES, `the published binary is ${size} bytes, more than ${MAX_BINARY_BYTES}`);
    const glibc = newestGlibcVersion(binary);
    assert.ok(compareVersions(glibc, GLIBC_FLOOR) <= 0, `the published binary needs GLIBC_${glibc}, newer than GLIBC_${GLIBC_FLOOR}`);
    const app = path.join(work, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }));
    // Only the tarballs: --offline keeps npm from fetching anything; the unpublished optional
    // binary packages of other platforms are skipped as optional dependencies are.
    execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', main, platform], {
      cwd: app,
      stdio: 'pipe',
    });
    const installed = path.join(app, 'node_modules', '@unrdf', 'consensus');
    assert.ok(!fs.readdirSync(installed, { recursive: true }).some((f) => f.endsWith('.node')), 'the main package ships no binary');
    const platformInstalled = path.join(app, 'node_modules', '@unrdf', `consensus-${host.platformArchABI}`);
    const installedBinary = path.join(platformInstalled, path.basename(binary));
    assert.ok(fs.readFileSync(installedBinary).equals(fs.readFileSync(binary)), 'the platform package holds the published binary');
    assert.ok(!fs.existsSync(path.join(installed, 'src')), 'the main package ships no Rust source');

    // PATH without cargo or rustc: only the directory of this node binary.
    const env = { PATH: path.dirname(process.execPath), HOME: work };
    assert.notEqual(spawnSync('cargo', ['--version'], { env }).status, 0, 'cargo must not be reachable');
    const dataDir = path.join(work, 'data');
    const cjs = spawnSync(
      process.execPath,
      [
        '-e',
        // process.report.getReport() can stall start-up for seconds: loading must not read it.
        `Object.defineProperty(process, 'report', { get() { throw new Error('process.report was read while loading'); } });
         const { createRaftCoordinator } = require('@unrdf/consensus');
         (async () => {
           const raft = createRaftCoordinator({ nodeId: 'p1', port: 0, dataDir: ${JSON.stringify(dataDir)}, bootstrap: true });
           await raft.initialize();
           while (!raft.isLeader) await new Promise((r) => setTimeout(r, 5));
           const r = await raft.replicateCommand({ type: 'installed' });
           await raft.stop();
           console.log(r.committed);
         })();`,
      ],
      { cwd: app, env, encoding: 'utf8', timeout: 30000 },
    );
    assert.equal(cjs.status, 0, cjs.stderr);
    assert.equal(cjs.stdout.trim(), 'true');
    const esm = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `import { createRaftCoordinator } from '@unrdf/consensus'; console.log(typeof createRaftCoordinator);`],
      { cwd: app, env, encoding: 'utf8', timeout: 30000 },
    );
    assert.equal(esm.status, 0, esm.stderr);
    assert.equal(esm.stdout.trim(), 'function');
    // The CLI is installed as a bin and its offline commands reach the installed binary.
    const bin = path.join(app, 'node_modules', '.bin', 'unrdf-consensus');
    const exported = spawnSync(bin, ['export', '--data-dir', dataDir], { cwd: app, env, encoding: 'utf8', timeout: 30000 });
    assert.equal(exported.status, 0, exported.stderr);
    assert.equal(JSON.parse(exported.stdout.split('\n')[0]).nodeId, 'p1');

    // Without the platform package (installed with optional dependencies turned off), loading names
    // what it looked for and how to get it; an installed package has no build script to suggest.
    fs.rmSync(platformInstalled, { recursive: true, force: true });
    const load = `try { require('@unrdf/consensus'); console.log('loaded'); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    const missing = spawnSync(process.execPath, ['-e', load], { cwd: app, env, encoding: 'utf8', timeout: 30000 });
    assert.equal(missing.status, 0, missing.stderr);
    const failure = JSON.parse(missing.stdout);
    assert.equal(failure.code, 'ERR_NATIVE_MISSING');
    assert.match(failure.message, /platform linux, arch x64, abi gnu/);
    assert.match(failure.message, /@unrdf\/consensus-linux-x64-gnu/);
    assert.match(failure.message, /optional dependencies/);
    assert.doesNotMatch(failure.message, /npm run build/);
    // NAPI_RS_NATIVE_LIBRARY_PATH names a binary to load instead of looking for the package.
    const overridden = spawnSync(process.execPath, ['-e', load], {
      cwd: app,
      env: { ...env, NAPI_RS_NATIVE_LIBRARY_PATH: binary },
      encoding: 'utf8',
      timeout: 30000,
    });
    assert.equal(overridden.status, 0, overridden.stderr);
    assert.equal(overridden.stdout.trim(), 'loaded');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});
