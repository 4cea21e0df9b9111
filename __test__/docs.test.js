'use strict';
// Every code block of README.md and docs/*.md runs as copied.
//
// js/mjs/javascript blocks run with node, as ES modules when they use `import` (else as CommonJS), in a
// fresh directory where `@unrdf/consensus` resolves to this package; they must exit 0 within a minute.
// sh/bash/shell blocks run with `bash -euo pipefail` in such a directory. A block is left out only when
// the line before its fence is `<!-- not run: REASON -->`, and the reason must say what it needs (a running
// cluster, a backup file, a long run of its own): this test lists them so they stay visible and few.
// Other languages (yaml, json, plain text) are not programs and are not run.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const RUN_LANGS = { js: 'node', mjs: 'node', javascript: 'node', sh: 'sh', bash: 'sh', shell: 'sh' };
const MAX_NOT_RUN = 8;

/** Fenced blocks of a markdown file: language, code (indentation of the fence removed), line, marker. */
function blocks(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const out = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\w*)\s*$/.exec(lines[i]);
    if (!open) continue;
    const indent = open[1].length;
    const body = [];
    let j = i + 1;
    while (j < lines.length && !/^\s*```\s*$/.test(lines[j])) body.push(lines[j++].slice(indent));
    let k = i - 1;
    while (k >= 0 && lines[k].trim() === '') k--;
    const marker = k >= 0 ? /^\s*<!--\s*not run:\s*(.+?)\s*-->\s*$/.exec(lines[k]) : null;
    out.push({ lang: open[2].toLowerCase(), code: body.join('\n'), line: i + 1, notRun: marker ? marker[1] : null });
    i = j;
  }
  return out;
}

function files() {
  const docs = path.join(root, 'docs');
  const list = [path.join(root, 'README.md')];
  if (fs.existsSync(docs)) {
    for (const f of fs.readdirSync(docs).sort()) if (f.endsWith('.md')) list.push(path.join(docs, f));
  }
  return list;
}

/** A scratch directory where `@unrdf/consensus` is this package, as after `npm install`. */
function scratch() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-consensus-docs-'));
  fs.mkdirSync(path.join(dir, 'node_modules', '@unrdf'), { recursive: true });
  fs.symlinkSync(root, path.join(dir, 'node_modules', '@unrdf', 'consensus'), 'dir');
  return dir;
}

function run(cmd, args, cwd) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PATH: `${path.join(cwd, 'node_modules', '.bin')}:${process.env.PATH}` } });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

const notRun = [];
for (const file of files()) {
  const rel = path.relative(root, file);
  for (const b of blocks(file)) {
    const kind = RUN_LANGS[b.lang];
    if (!kind) continue;
    if (b.notRun) {
      notRun.push(`${rel}:${b.line} (${b.notRun})`);
      continue;
    }
    test(`${rel}:${b.line} (${b.lang}) runs as copied`, async (t) => {
      const dir = scratch();
      t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
      let r;
      if (kind === 'node') {
        const esm = /^\s*import\s/m.test(b.code) || /^\s*export\s/m.test(b.code);
        const script = path.join(dir, esm ? 'block.mjs' : 'block.cjs');
        fs.writeFileSync(script, b.code);
        r = await run(process.execPath, [script], dir);
      } else {
        const script = path.join(dir, 'block.sh');
        fs.writeFileSync(script, b.code);
        r = await run('bash', ['-euo', 'pipefail', script], dir);
      }
      assert.strictEqual(r.code, 0, `${rel}:${b.line} exited ${r.code ?? r.signal}:\n${r.output}`);
    });
  }
}

test('blocks left out are marked with a reason, and few', (t) => {
  for (const entry of notRun) t.diagnostic(`not run: ${entry}`);
  for (const entry of notRun) assert.match(entry, /\(.{10,}\)$/, `${entry}: say why it is not run`);
  assert.ok(notRun.length <= MAX_NOT_RUN, `${notRun.length} blocks are not run (at most ${MAX_NOT_RUN}):\n${notRun.join('\n')}`);
});
