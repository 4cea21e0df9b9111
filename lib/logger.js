'use strict';
// The `logger` option: any pino-style logger (pino, bunyan-like wrappers, a console adapter)
// with `debug/info/warn/error(obj, msg)`.
const { invalidConfig } = require('./errors');

const LOG_LEVELS = ['error', 'warn', 'info', 'debug', 'trace'];
const REQUIRED = ['debug', 'info', 'warn', 'error'];

function checkLogger(logger) {
  if (logger === undefined || logger === null) return undefined;
  if (typeof logger !== 'object' && typeof logger !== 'function') {
    throw invalidConfig('logger', 'expected a pino-style logger with debug, info, warn and error methods');
  }
  const missing = REQUIRED.filter((m) => typeof logger[m] !== 'function');
  if (missing.length > 0) {
    throw invalidConfig('logger', `expected a pino-style logger; it has no ${missing.join(', ')} method`);
  }
  return logger;
}

module.exports = { checkLogger, LOG_LEVELS };
