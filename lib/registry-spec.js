'use strict';
// Registry writes beyond the plain form (the command itself under a key): an explicit value, a
// condition on the key's current value, and further keys written in the same entry. They cross
// into the native layer as one JSON text, with values as JSON text of their own.
const { invalidOperation } = require('./errors');

const MAX_KEY = 511;
const MAX_BATCH = 10000;

function isRich(r) {
  return 'value' in r || 'ifEquals' in r || r.ifAbsent === true || r.also !== undefined;
}

function json(value, field) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw invalidOperation(field, `not JSON-serializable: ${err.message}`);
  }
  if (text === undefined) throw invalidOperation(field, 'expected a JSON-serializable value (undefined, functions and symbols are not)');
  return text;
}

function checkKey(key, field) {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY) {
    throw invalidOperation(field, `expected a non-empty string of at most ${MAX_KEY} characters`);
  }
}

function toSpec(r, field, nested) {
  if (r === null || typeof r !== 'object') throw invalidOperation(field, 'expected an object {key, value | delete}');
  checkKey(r.key, `${field}.key`);
  const spec = { key: r.key };
  if (r.delete === true) spec.delete = true;
  else if ('value' in r) spec.value = json(r.value, `${field}.value`);
  if ('ifEquals' in r) spec.ifEquals = json(r.ifEquals, `${field}.ifEquals`);
  if (r.ifAbsent === true) {
    if (spec.ifEquals !== undefined) throw invalidOperation(field, 'ifAbsent and ifEquals exclude each other');
    spec.ifAbsent = true;
  }
  if (r.also !== undefined) {
    if (nested) throw invalidOperation(`${field}.also`, 'only the first write of a batch carries `also`');
    if (!Array.isArray(r.also) || r.also.length > MAX_BATCH) {
      throw invalidOperation(`${field}.also`, `expected an array of at most ${MAX_BATCH} writes`);
    }
    spec.also = r.also.map((w, i) => toSpec(w, `${field}.also[${i}]`, true));
  }
  return spec;
}

/** The JSON form of a rich registry write, or undefined for the plain form. */
function registrySpecJson(r) {
  if (!isRich(r)) return undefined;
  return JSON.stringify(toSpec(r, 'registry', false));
}

module.exports = { registrySpecJson };
