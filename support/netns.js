'use strict';
// Test hosts for real partitions: each node gets its own network namespace, joined to the others
// by a bridge in the root namespace through a veth pair. Isolating a node takes its link down;
// healing brings it back up. Needs root on Linux with iproute2; `available()` says whether this
// machine can, so tests skip visibly where it cannot.
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');

function ip(...args) {
  return execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
}

function available() {
  if (process.platform !== 'linux' || typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return { ok: false, why: 'network namespaces need root on Linux' };
  }
  const probe = `ucprobe${crypto.randomBytes(3).toString('hex')}`;
  try {
    ip('netns', 'add', probe);
    ip('netns', 'del', probe);
    return { ok: true };
  } catch (err) {
    return { ok: false, why: `ip netns is not usable here: ${String(err.stderr || err.message).trim()}` };
  }
}

/** Every [from, to] pair of hosts in different groups: what a split between the groups blocks. */
function crossGroupPairs(groups) {
  return groups.flatMap((a) => groups.filter((b) => b !== a).flatMap((b) => a.flatMap((from) => b.map((to) => [from, to]))));
}

/** A bridge and `count` namespaces, hosts 10.<a>.<b>.1..count on a private /24 of our own. */
class TestNetwork {
  constructor(count) {
    this.id = crypto.randomBytes(2).toString('hex');
    this.count = count;
    // A /24 that is ours alone: derived from the id so concurrent runs do not collide.
    const n = parseInt(this.id, 16);
    this.subnet = `10.${200 + (n % 50)}.${n >> 8}`;
    this.bridge = `ucb${this.id}`;
    this.hosts = [];
  }

  setup() {
    ip('link', 'add', this.bridge, 'type', 'bridge');
    ip('link', 'set', this.bridge, 'up');
    for (let i = 1; i <= this.count; i++) {
      const ns = `uc${this.id}n${i}`;
      const outer = `ucv${this.id}${i}`;
      const inner = `uci${this.id}${i}`;
      const addr = `${this.subnet}.${i}`;
      ip('netns', 'add', ns);
      ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner);
      ip('link', 'set', inner, 'netns', ns);
      ip('link', 'set', outer, 'master', this.bridge);
      ip('link', 'set', outer, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', inner);
      ip('-n', ns, 'link', 'set', inner, 'up');
      this.hosts.push({ ns, outer, addr });
    }
    return this;
  }

  /** Cuts host `i` (1-based) off from every other host. */
  isolate(i) {
    ip('link', 'set', this.hosts[i - 1].outer, 'down');
  }

  heal(i) {
    ip('link', 'set', this.hosts[i - 1].outer, 'up');
  }

  /**
   * Drops everything host `from` sends to host `to` (1-based), one way only: a blackhole route in
   * `from`'s namespace. What `to` sends still arrives, as with a half-broken link.
   */
  block(from, to) {
    ip('-n', this.hosts[from - 1].ns, 'route', 'add', 'blackhole', `${this.hosts[to - 1].addr}/32`);
  }

  unblock(from, to) {
    ip('-n', this.hosts[from - 1].ns, 'route', 'del', 'blackhole', `${this.hosts[to - 1].addr}/32`);
  }

  /** Splits the hosts into groups (arrays of 1-based host numbers) that cannot reach each other. */
  split(groups) {
    const blocked = crossGroupPairs(groups);
    for (const [from, to] of blocked) this.block(from, to);
    return blocked;
  }

  teardown() {
    for (const h of this.hosts) {
      try {
        ip('netns', 'del', h.ns);
      } catch {
        // already gone
      }
      try {
        ip('link', 'del', h.outer);
      } catch {
        // deleted with its peer
      }
    }
    try {
      ip('link', 'del', this.bridge);
    } catch {
      // already gone
    }
  }
}

module.exports = { available, TestNetwork, crossGroupPairs };
