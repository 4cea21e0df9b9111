'use strict';
// A filesystem of the test's own whose disk can be stalled: an ext4 image on a loop device,
// frozen with fsfreeze for a while (every write to it, and every fsync, waits until it thaws),
// as a shared or congested disk stalls. Needs root on Linux with util-linux and e2fsprogs;
// `available()` says whether this machine can, so tests skip visibly where it cannot.
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const IMAGE_BYTES = 512 * 1024 * 1024;

function available() {
  if (process.platform !== 'linux') return { ok: false, why: 'needs Linux (loop devices, fsfreeze)' };
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return { ok: false, why: 'needs root (loop devices, mount, fsfreeze)' };
  for (const tool of ['losetup', 'mkfs.ext4', 'mount', 'umount', 'fsfreeze']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return { ok: false, why: `${tool} is not installed (Debian: util-linux, e2fsprogs, mount)` };
    }
  }
  // A container may have the tools but no loop devices.
  const probe = new StalledDisk();
  try {
    probe.create();
    return { ok: true, why: null };
  } catch (err) {
    return { ok: false, why: `no loop-mounted filesystem here: ${String(err.message).split('\n')[0]}` };
  } finally {
    probe.destroy();
  }
}

class StalledDisk {
  constructor() {
    this.dir = null;
    this.mountPoint = null;
    this.device = null;
    this.frozen = false;
  }

  /** Makes and mounts the filesystem; returns its mount point. */
  create() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stalled-disk-'));
    const image = path.join(this.dir, 'disk.img');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, IMAGE_BYTES);
    this.device = execFileSync('losetup', ['--find', '--show', image], { encoding: 'utf8' }).trim();
    execFileSync('mkfs.ext4', ['-q', this.device], { stdio: 'ignore' });
    this.mountPoint = path.join(this.dir, 'mnt');
    fs.mkdirSync(this.mountPoint);
    execFileSync('mount', [this.device, this.mountPoint], { stdio: 'ignore' });
    return this.mountPoint;
  }

  /** Stalls the disk for `ms`: writes and fsyncs on it wait until it thaws. */
  async stall(ms) {
    execFileSync('fsfreeze', ['--freeze', this.mountPoint]);
    this.frozen = true;
    try {
      await new Promise((resolve) => setTimeout(resolve, ms));
    } finally {
      this.thaw();
    }
  }

  thaw() {
    if (!this.frozen) return;
    execFileSync('fsfreeze', ['--unfreeze', this.mountPoint]);
    this.frozen = false;
  }

  /** Thaws, unmounts and removes everything; safe to call more than once or after a failure. */
  destroy() {
    const quietly = (fn) => {
      try {
        fn();
      } catch {}
    };
    quietly(() => this.thaw());
    if (this.mountPoint) quietly(() => execFileSync('umount', [this.mountPoint], { stdio: 'ignore' }));
    if (this.device) quietly(() => execFileSync('losetup', ['--detach', this.device], { stdio: 'ignore' }));
    if (this.dir) quietly(() => fs.rmSync(this.dir, { recursive: true, force: true }));
    this.mountPoint = null;
    this.device = null;
    this.dir = null;
  }
}

module.exports = { available, StalledDisk };
