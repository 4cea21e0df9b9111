'use strict';
// Runs the `unrdf-consensus` CLI as its own process, as an operator would, for tests.
const { spawn } = require('node:child_process');
const path = require('node:path');

const BIN = path.join(__dirname, '..', 'bin', 'unrdf-consensus.js');

/** Resolves `{code, stdout, stderr}` once the command exits. */
function runCli(args, { env = {}, timeoutMs = 120000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`unrdf-consensus ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Starts `unrdf-consensus node` with `args`; resolves once it printed its ready line, with the
 * child and what the line says ({nodeId, port, admin}).
 */
function startCliNode(args, { env = {}, timeoutMs = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'node', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const proc = { child, stdout: '', stderr: '', exited: null };
    proc.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    const timer = setTimeout(() => reject(new Error(`node ${args.join(' ')} not ready within ${timeoutMs} ms\n${proc.stderr}`)), timeoutMs);
    child.stderr.on('data', (d) => (proc.stderr += d));
    child.stdout.on('data', (d) => {
      proc.stdout += d;
      const m = /^ready (.*)$/m.exec(proc.stdout);
      if (m && !proc.ready) {
        proc.ready = JSON.parse(m[1]);
        clearTimeout(timer);
        resolve(proc);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (!proc.ready) reject(new Error(`node exited with ${code} before it was ready\n${proc.stderr}`));
    });
  });
}

module.exports = { runCli, startCliNode, BIN };
