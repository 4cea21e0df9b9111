'use strict';
// The published form: the main package and the linux-x64-gnu binary package, packed with
// `npm pack`, install into an empty directory and work there with no Rust toolchain on PATH.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pack } = require('../scripts/pack');
const { platformSuffix } = require('../lib/platform');

test('npm pack of the main and platform packages installs and runs without a Rust toolchain', { timeout: 300000 }, (t) => {
  if (platformSuffix() !== 'linux-x64-gnu') {
    t.skip(`only linux-x64-gnu has a binary package built here (this is ${platformSuffix()})`);
    return;
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'consensus-pack-'));
  try {
    const { main, platform } = pack(path.join(work, 'tarballs'));
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
    assert.ok(!fs.readdirSync(installed).some((f) => f.endsWith('.node')), 'the main package ships no binary');
    assert.ok(!fs.existsSync(path.join(installed, 'src')), 'the main package ships no Rust source');

    // PATH without cargo or rustc: only the directory of this node binary.
    const env = { PATH: path.dirname(process.execPath), HOME: work };
    assert.notEqual(spawnSync('cargo', ['--version'], { env }).status, 0, 'cargo must not be reachable');
    const dataDir = path.join(work, 'data');
    const cjs = spawnSync(
      process.execPath,
      [
        '-e',
        `const { createRaftCoordinator } = require('@unrdf/consensus');
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
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});
