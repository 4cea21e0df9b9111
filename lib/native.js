'use strict';
// Loads the native addon: a locally built binary in the package root first (development), then
// the prebuilt per-platform package that npm installed as an optional dependency.
const fs = require('node:fs');
const path = require('node:path');
const { platformSuffix } = require('./platform');

function load() {
  // An explicit binary (another build of this package, e.g. to run an older release's data).
  const explicit = process.env.NAPI_RS_NATIVE_LIBRARY_PATH;
  if (explicit) return require(path.resolve(explicit));
  const suffix = platformSuffix();
  const local = path.join(__dirname, '..', `consensus.${suffix}.node`);
  if (fs.existsSync(local)) return require(local);
  const pkg = `@unrdf/consensus-${suffix}`;
  try {
    return require(pkg);
  } catch (err) {
    const e = new Error(
      `@unrdf/consensus has no native binary for ${suffix}: install ${pkg} ` +
        `(npm installs it automatically unless optional dependencies are disabled), ` +
        `or build from source with "npm run build". Cause: ${err.message}`,
    );
    e.code = 'ERR_NATIVE_MISSING';
    throw e;
  }
}

module.exports = load();
