#!/usr/bin/env node
// Packs the main package and this platform's binary package into tarballs, as they would be
// published: `node scripts/pack.js [outDir]` prints the two tarball paths.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { build } = require('./build');
const { platformSuffix } = require('../lib/platform');

function pack(outDir) {
  const root = path.resolve(__dirname, '..');
  fs.mkdirSync(outDir, { recursive: true });
  const binary = build();
  const suffix = platformSuffix();
  const platformDir = path.join(root, 'npm', suffix);
  fs.copyFileSync(binary, path.join(platformDir, path.basename(binary)));
  const npmPack = (cwd) => {
    const out = execFileSync('npm', ['pack', '--json', '--pack-destination', outDir], { cwd, encoding: 'utf8' });
    return path.join(outDir, JSON.parse(out)[0].filename);
  };
  return { main: npmPack(root), platform: npmPack(platformDir) };
}

module.exports = { pack };

if (require.main === module) {
  const { main, platform } = pack(path.resolve(process.argv[2] || 'dist'));
  console.log(main);
  console.log(platform);
}
