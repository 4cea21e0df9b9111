'use strict';
// The chaos run's history check catches each kind of violation it claims to, and passes a
// history that keeps every rule.
const test = require('node:test');
const assert = require('node:assert/strict');
const { checkHistory } = require('../support/history');

/** Three replicas that agree: a1 at 5, a2 at 6 (both acked), maybe at 7 (indeterminate). */
function consistentHistory() {
  const at = (logIndex, term = 2) => ({ logIndex, term });
  const replica = () => new Map([['a1', at(5)], ['a2', at(6)], ['maybe', at(7)], ['never', null]]);
  return {
    ops: [
      { id: 'a1', outcome: 'ok', index: 5, term: 2 },
      { id: 'a2', outcome: 'ok', index: 6, term: 2 },
      { id: 'maybe', outcome: 'indeterminate' },
      { id: 'never', outcome: 'indeterminate' },
    ],
    replicas: new Map([['n1', replica()], ['n2', replica()], ['n3', replica()]]),
    lifetimes: [
      { nodeId: 'n1', entries: [[4, 2, null], [5, 2, 'a1'], [6, 2, 'a2'], [7, 2, 'maybe']] },
      // Restarted: its second life got a snapshot through 6, then the rest.
      { nodeId: 'n2', entries: [[5, 2, 'a1']] },
      { nodeId: 'n2', entries: [[7, 2, 'maybe']] },
      { nodeId: 'n3', entries: [[7, 2, 'maybe']] },
    ],
    // n2 and n3 took what snapshots covered through restore: their daemons hold it all the same.
    daemons: new Map([
      ['n1', [[5, 'a1'], [6, 'a2'], [7, 'maybe']]],
      ['n2', [[5, 'a1'], [6, 'a2'], [7, 'maybe']]],
      ['n3', [[5, 'a1'], [6, 'a2'], [7, 'maybe']]],
    ]),
    leadersByTerm: new Map([[1, new Set(['n1'])], [2, new Set(['n2'])]]),
  };
}

const kinds = (h) => checkHistory(h).map((v) => v.kind);

test('a history that keeps every rule has no violation', () => {
  assert.deepEqual(checkHistory(consistentHistory()), []);
});

test('an acknowledged operation missing on one replica, or at another index, is a violation', () => {
  const lost = consistentHistory();
  lost.replicas.get('n3').set('a2', null);
  assert.deepEqual(kinds(lost), ['acknowledged-lost']);
  const moved = consistentHistory();
  moved.replicas.get('n2').set('a1', { logIndex: 9, term: 3 });
  assert.deepEqual(kinds(moved), ['acknowledged-moved']);
});

test('an indeterminate operation on some replicas only, or at two indexes, is a violation', () => {
  const partial = consistentHistory();
  partial.replicas.get('n1').set('never', { logIndex: 8, term: 2 });
  assert.deepEqual(kinds(partial), ['divergent']);
  const split = consistentHistory();
  split.replicas.get('n3').set('maybe', { logIndex: 8, term: 2 });
  assert.ok(kinds(split).includes('divergent'));
});

test('two operations at one index is a violation', () => {
  const h = consistentHistory();
  for (const r of h.replicas.values()) r.set('maybe', { logIndex: 6, term: 2 });
  assert.ok(kinds(h).includes('index-reused'));
});

test('deliveries out of order, twice, or at the wrong index are violations', () => {
  const order = consistentHistory();
  order.lifetimes[0].entries = [[4, 2, null], [6, 2, 'a2'], [5, 2, 'a1'], [7, 2, 'maybe']];
  assert.deepEqual(kinds(order), ['delivery-order']);
  const twice = consistentHistory();
  twice.lifetimes[1].entries.push([8, 2, 'a1']);
  assert.deepEqual(kinds(twice), ['delivered-twice', 'delivered-elsewhere']);
  const elsewhere = consistentHistory();
  elsewhere.lifetimes[2].entries = [[7, 2, 'a2']];
  assert.ok(kinds(elsewhere).includes('delivered-elsewhere'));
});

test("every node's daemon must hold every acknowledged operation, once, in log order, at its index", () => {
  // Restarted or not: a node whose daemon lacks an acknowledged operation lost it.
  const missing = consistentHistory();
  missing.daemons.set('n2', [[5, 'a1'], [7, 'maybe']]);
  assert.deepEqual(kinds(missing), ['not-delivered']);
  const twice = consistentHistory();
  twice.daemons.set('n3', [[5, 'a1'], [6, 'a2'], [6, 'a2'], [7, 'maybe']]);
  assert.deepEqual(kinds(twice), ['daemon-twice', 'daemon-order']);
  const order = consistentHistory();
  order.daemons.set('n1', [[6, 'a2'], [5, 'a1'], [7, 'maybe']]);
  assert.deepEqual(kinds(order), ['daemon-order']);
  const elsewhere = consistentHistory();
  elsewhere.daemons.set('n1', [[5, 'a1'], [6, 'maybe'], [7, 'a2']]);
  assert.ok(kinds(elsewhere).includes('daemon-elsewhere'));
});

test('two leaders in one term is a violation', () => {
  const h = consistentHistory();
  h.leadersByTerm.get(2).add('n3');
  assert.deepEqual(kinds(h), ['two-leaders']);
});
