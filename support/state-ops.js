'use strict';
// IPC ops of a node process for the DistributedStateMachine: the test suite and the benchmark
// drive a node's state machine through these (see node-worker.js).
const { createDistributedStateMachine } = require('..');
const { runClosedLoop } = require('../bench/measure');

function stateOps(getRaft, send) {
  let dsm = null;
  const changes = []; // [index, key, operation] of every state_changed, in order
  const watches = new Map();
  let nextWatch = 1;

  function need() {
    if (!dsm) throw new Error('dsmInit first');
    return dsm;
  }

  return {
    async dsmInit({ config = {} } = {}) {
      dsm = createDistributedStateMachine({ nodeId: getRaft().nodeId, ...config });
      dsm.on('state_changed', ({ index, key, operation }) => changes.push([index, key, operation]));
      for (const name of ['snapshot_created', 'snapshot_restored']) dsm.on(name, (p) => send({ event: `dsm:${name}`, payload: p }));
      await dsm.initialize(getRaft());
      return dsm.getStats();
    },
    async dsmSet({ key, value, forward }) {
      await need().set(key, value, { forward });
      return null;
    },
    /** A set retried (forwarded) while leadership is unsettled, as a careful daemon would do. */
    async dsmSetRetry({ key, value, timeoutMs = 30000 }) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          await need().set(key, value, { forward: true });
          return null;
        } catch (err) {
          if (!['ERR_NO_QUORUM', 'ERR_NOT_LEADER', 'ERR_TIMEOUT'].includes(err.code) || Date.now() > deadline) throw err;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
    },
    async dsmDelete({ key, forward }) {
      await need().delete(key, { forward });
      return null;
    },
    async dsmBatch({ changes: batch, forward }) {
      await need().batchUpdate(batch, { forward });
      return null;
    },
    async dsmGet({ key, linearizable, timeoutMs }) {
      const value = linearizable ? await need().get(key, { linearizable: true, timeoutMs }) : need().get(key);
      return { value: value === undefined ? null : value, found: value !== undefined };
    },
    async dsmCas({ key, expected, value, forward }) {
      return need().compareAndSet(key, expected === null ? undefined : expected, value, { forward });
    },
    async dsmEntries() {
      return need().entries();
    },
    async dsmStats() {
      return need().getStats();
    },
    async dsmChanges({ from = 0 } = {}) {
      return { changes: changes.slice(from), total: changes.length };
    },
    /**
     * `count` sets of distinct keys with `concurrency` in flight. With `retry`, a set refused for
     * want of a confirmed leader (ERR_NO_QUORUM, ERR_NOT_LEADER, ERR_TIMEOUT: leadership moving on a
     * busy machine) is sent again, forwarded, until acknowledged; setting a key again is harmless.
     */
    async dsmLoad({ count, concurrency, prefix = 'k', forward = false, retry = false }) {
      const s = need();
      const retried = {};
      const transient = ['ERR_NO_QUORUM', 'ERR_NOT_LEADER', 'ERR_TIMEOUT'];
      const r = await runClosedLoop(count, concurrency, async (seq) => {
        const deadline = Date.now() + 60000;
        for (;;) {
          try {
            return await s.set(`${prefix}-${seq}`, { seq, by: getRaft().nodeId }, { forward: forward || retry });
          } catch (err) {
            if (!retry || !transient.includes(err.code) || Date.now() > deadline) throw err;
            retried[err.code] = (retried[err.code] || 0) + 1;
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        }
      });
      return { ...r, retried };
    },
    /** `count` linearizable gets of `key` with `concurrency` in flight. */
    async dsmReadLoad({ count, concurrency, key }) {
      const s = need();
      return runClosedLoop(count, concurrency, () => s.get(key, { linearizable: true }));
    },
    /**
     * `clients` concurrent loops, each adding 1 to `key` `increments` times by compare-and-set.
     * The value is `{count, seen: {client: last increment}}`: a write whose outcome is unknown
     * (the leader changed while it was in flight) is recognised on the next read by its client
     * entry, so it is never counted twice nor lost.
     */
    async dsmCounter({ key, clients, increments, forward = true, name = getRaft().nodeId }) {
      const s = need();
      let attempts = 0;
      const errors = {};
      const messages = [];
      await Promise.all(
        Array.from({ length: clients }, async (_, c) => {
          const me = `${name}-${c}`;
          for (let i = 0; i < increments; i++) {
            let current = s.get(key);
            for (;;) {
              if (current && current.seen[me] === i) break; // an unknown outcome that did apply
              attempts++;
              const next = { count: (current ? current.count : 0) + 1, seen: { ...(current ? current.seen : {}), [me]: i } };
              try {
                const r = await s.compareAndSet(key, current, next, { forward });
                if (r.ok) break;
                current = r.value;
              } catch (err) {
                errors[err.code] = (errors[err.code] || 0) + 1;
                messages.push(err.message);
                await s.get(key, { linearizable: true }).then(
                  (v) => {
                    current = v;
                  },
                  () => {
                    current = s.get(key);
                  },
                );
              }
            }
          }
        }),
      );
      return { attempts, errors, messages: messages.slice(0, 5) };
    },
    /** Starts a watch; its changes are collected until dsmWatchStop. */
    async dsmWatchStart({ prefix = '', fromIndex }) {
      const id = nextWatch++;
      const ac = new AbortController();
      const w = { seen: [], error: null, ac };
      watches.set(id, w);
      const it = need().watch(prefix, { fromIndex, signal: ac.signal });
      w.done = (async () => {
        try {
          for await (const c of it) w.seen.push([c.index, c.key, c.operation, c.value === undefined ? null : c.value]);
        } catch (err) {
          w.error = { code: err.code, message: err.message };
        }
      })();
      return id;
    },
    async dsmWatchSeen({ id }) {
      const w = watches.get(id);
      return { seen: w.seen, error: w.error };
    },
    async dsmWatchStop({ id }) {
      const w = watches.get(id);
      w.ac.abort();
      await w.done;
      watches.delete(id);
      return { seen: w.seen, error: w.error };
    },
    async dsmShutdown() {
      if (dsm) await dsm.shutdown();
      return null;
    },
  };
}

module.exports = { stateOps };
