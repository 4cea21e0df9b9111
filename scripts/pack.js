#!/usr/bin/env node
// Packs the main package and this platform's binary package into tarballs, as they would be
// published: `node scripts/pack.js [outDir]` prints the two tarball paths. The binary is the
// published build (scripts/build.js buildDist: LTO, stripped, glibc 2.17 on Linux x64).
//
// The per-platform packages become optionalDependencies of the main package only here, at
// publish time (the release workflow's `napi pre-publish` does the same): listed in the
// repository's package.json they would make every install of a clone look for binaries that are
// built, not downloaded, during development.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { buildDist, hostTarget } = require('./build');

const root = path.resolve(__dirname, '..');

function pack(outDir) {
  fs.mkdirSync(outDir, { recursive: true });
  const binary = buildDist();
  // `napi artifacts` (the release workflow's step) wants a binary for every configured target;
  // here there is one, for this machine.
  const platformDir = path.join(root, 'npm', hostTarget().platformArchABI);
  fs.copyFileSync(binary, path.join(platformDir, path.basename(binary)));
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const staging = fs.mkdtempSync(path.join(outDir, 'stage-'));
  for (const entry of [...manifest.files.filter((f) => !f.startsWith('!')), 'README.md']) {
    // A development build leaves its binary in lib/; the main package ships none.
    fs.cpSync(path.join(root, entry), path.join(staging, entry), { recursive: true, filter: (src) => !src.endsWith('.node') });
  }
  manifest.optionalDependencies = Object.fromEntries(
    fs.readdirSync(path.join(root, 'npm')).map((p) => [`${manifest.name}-${p}`, manifest.version]),
  );
  delete manifest.devDependencies;
  delete manifest.scripts;
  fs.writeFileSync(path.join(staging, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const npmPack = (cwd) => {
    const out = execFileSync('npm', ['pack', '--json', '--pack-destination', outDir], { cwd, encoding: 'utf8' });
    return path.join(outDir, JSON.parse(out)[0].filename);
  };
  const tarballs = { main: npmPack(staging), platform: npmPack(platformDir), binary };
  fs.rmSync(staging, { recursive: true, force: true });
  return tarballs;
}

module.exports = { pack };

if (require.main === module) {
  const { main, platform } = pack(path.resolve(process.argv[2] || 'dist'));
  console.log(main);
  console.log(platform);
}
