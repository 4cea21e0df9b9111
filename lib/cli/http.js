'use strict';
// Requests to a node's admin endpoint, with the bearer token when one is given.
const http = require('node:http');
const https = require('node:https');
const { UsageError } = require('./args');

function parseUrl(text) {
  let url;
  try {
    url = new URL(/^[a-z]+:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw new UsageError(`not an admin URL: ${text} (expected http://host:port)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`not an admin URL: ${text} (http or https)`);
  return url;
}

/**
 * Sends a request; resolves `{status, headers, body, json}` (json when the answer is JSON), or
 * with `res` itself for `stream: true`. Rejects on connection failure or timeout.
 */
function request(base, pathname, { method = 'GET', token, body, timeoutMs = 10000, stream = false } = {}) {
  const url = new URL(pathname, parseUrl(base));
  const lib = url.protocol === 'https:' ? https : http;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = Buffer.byteLength(payload);
  }
  return new Promise((resolve, reject) => {
    const req = lib.request(url, { method, headers }, (res) => {
      if (stream && res.statusCode === 200) {
        req.setTimeout(0);
        resolve({ status: res.statusCode, headers: res.headers, res });
        return;
      }
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        if (/json/.test(res.headers['content-type'] || '')) {
          try {
            json = JSON.parse(text);
          } catch {
            // left undefined: the caller reports the raw text
          }
        }
        resolve({ status: res.statusCode, headers: res.headers, body: text, json });
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** The message of an error answer, for the operator. */
function describe(res) {
  const e = res.json && res.json.error;
  if (e) return `${res.status} ${e.code}: ${e.message}${e.leaderId ? ` (leader: ${e.leaderId})` : ''}`;
  return `${res.status} ${res.body ? res.body.trim().slice(0, 300) : ''}`;
}

module.exports = { request, describe, parseUrl };
