'use strict';
// The disk's own fsync latency, measured beside the cluster: a thread that writes 4 KiB and
// fdatasyncs it every 10 ms in a directory on the nodes' filesystem. Every write of the package
// waits for fsyncs, so when this probe stalls too, a stall of the cluster's writes in the same
// minute is the disk's (on a shared machine, another tenant's), not the package's.
const fs = require('node:fs');
const path = require('node:path');
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
const { round, percentile } = require('./measure');

const PROBE_EVERY_MS = 10;
const PROBE_BYTES = 4096;
/** The probe rewrites the same few pages, so its file stays small. */
const PROBE_SLOTS = 16;

class DiskProbe {
  /** Starts probing in `dir`, which must exist. */
  constructor(dir) {
    this._file = path.join(dir, 'disk-probe.dat');
    this._worker = new Worker(__filename, { workerData: { file: this._file } });
    this._worker.unref();
    this._pending = [];
    this._worker.on('message', (latencies) => this._pending.shift()?.(latencies));
    this._worker.on('error', () => {
      for (const resolve of this._pending.splice(0)) resolve([]);
    });
  }

  /** The fsync latencies (ms) since the last sample: count, p99 and max. */
  async sample() {
    const latencies = await new Promise((resolve) => {
      this._pending.push(resolve);
      this._worker.postMessage('sample');
    });
    const sorted = Float64Array.from(latencies).sort();
    return { fsyncs: sorted.length, p99Ms: round(percentile(sorted, 99), 1), maxMs: round(sorted[sorted.length - 1], 1) };
  }

  async stop() {
    await this._worker.terminate();
    fs.rmSync(this._file, { force: true });
  }
}

function probeLoop({ file }) {
  const fd = fs.openSync(file, 'w+');
  const page = Buffer.alloc(PROBE_BYTES, 0x5a);
  let latencies = [];
  let slot = 0;
  parentPort.on('message', () => {
    parentPort.postMessage(latencies);
    latencies = [];
  });
  const probeOnce = () => {
    const t0 = performance.now();
    fs.writeSync(fd, page, 0, PROBE_BYTES, (slot++ % PROBE_SLOTS) * PROBE_BYTES);
    fs.fdatasyncSync(fd);
    latencies.push(performance.now() - t0);
    setTimeout(probeOnce, PROBE_EVERY_MS);
  };
  probeOnce();
}

if (!isMainThread && workerData && workerData.file) probeLoop(workerData);

module.exports = { DiskProbe };
