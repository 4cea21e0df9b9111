'use strict';
// Argument parsing for the CLI: `--name value`, `--name=value` and boolean `--flag`, positionals
// in order. A usage error carries exit code 2, as Unix tools report one.

class UsageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'UsageError';
    this.exitCode = 2;
  }
}

/**
 * @param {string[]} argv
 * @param {{values?: string[], flags?: string[]}} spec options that take a value, and booleans
 */
function parse(argv, { values = [], flags = [] } = {}) {
  const options = {};
  const positionals = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === '-h') {
      options.help = true;
      continue;
    }
    if (!arg.startsWith('--') || arg === '--') {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const key = name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (name === 'help') {
      options.help = true;
    } else if (flags.includes(name)) {
      if (eq !== -1) throw new UsageError(`--${name} takes no value`);
      options[key] = true;
    } else if (values.includes(name)) {
      let value;
      if (eq !== -1) value = arg.slice(eq + 1);
      else if (i + 1 < argv.length) value = argv[++i];
      if (value === undefined || value === '') throw new UsageError(`--${name} needs a value`);
      options[key] = value;
    } else {
      throw new UsageError(`unknown option --${name}`);
    }
  }
  return { options, positionals };
}

module.exports = { parse, UsageError };
