'use strict';
// The history check of a chaos run, apart from the run so that it can be tested on histories
// made up to break each rule.

/**
 * @param {object} history
 * @param {Array<{id: string, outcome: 'ok'|'indeterminate'|'error', index?: number, term?: number}>} history.ops
 *   what the clients did: `ok` ones were acknowledged at `index`/`term`.
 * @param {Map<string, Map<string, {logIndex: number, term: number}|null>>} history.replicas
 *   per node, where its state machine applied each operation id (null: not applied).
 * @param {Array<{nodeId: string, entries: Array<[number, number, string|null]>, snapshotIndex: number,
 *   wholeRun: boolean}>} history.lifetimes per node process, what it delivered in order
 *   (`[index, term, operationId]`), the highest snapshot it installed, and whether it ran from
 *   start to end of the run.
 * @param {Map<number, Set<string>>} history.leadersByTerm every leader seen in each term.
 * @returns {Array<{kind: string, detail: string}>}
 */
function checkHistory({ ops, replicas, lifetimes, leadersByTerm }) {
  const violations = [];
  const violation = (kind, detail) => violations.push({ kind, detail });

  const indexOf = new Map(); // operation id -> the index the replicas hold it at
  for (const op of ops) {
    if (op.outcome === 'error') continue;
    const seen = [...replicas.entries()].map(([nodeId, found]) => [nodeId, found.get(op.id) ?? null]);
    if (op.outcome === 'ok') {
      for (const [nodeId, at] of seen) {
        if (!at) violation('acknowledged-lost', `${op.id} (acked at ${op.index}) is not applied on ${nodeId}`);
        else if (at.logIndex !== op.index || at.term !== op.term) {
          violation('acknowledged-moved', `${op.id} acked at ${op.index}/${op.term}, applied at ${at.logIndex}/${at.term} on ${nodeId}`);
        }
      }
      indexOf.set(op.id, op.index);
    } else {
      // Indeterminate: either everywhere at one index, or nowhere.
      const present = seen.filter(([, at]) => at);
      if (present.length && present.length !== seen.length) {
        violation('divergent', `${op.id} is applied on ${present.map(([n]) => n)} only`);
      }
      const indexes = new Set(present.map(([, at]) => at.logIndex));
      if (indexes.size > 1) violation('divergent', `${op.id} is applied at indexes ${[...indexes]}`);
      if (present.length) indexOf.set(op.id, present[0][1].logIndex);
    }
  }

  const idAt = new Map(); // index -> operation id
  for (const [id, index] of indexOf) {
    if (idAt.has(index)) violation('index-reused', `${idAt.get(index)} and ${id} both at index ${index}`);
    idAt.set(index, id);
  }

  for (const life of lifetimes) {
    let last = -1;
    const delivered = new Set();
    for (const [index, , opId] of life.entries) {
      if (index <= last) violation('delivery-order', `${life.nodeId} delivered index ${index} after ${last}`);
      last = index;
      if (!opId) continue;
      if (delivered.has(opId)) violation('delivered-twice', `${life.nodeId} delivered ${opId} twice`);
      delivered.add(opId);
      if (indexOf.has(opId) && indexOf.get(opId) !== index) {
        violation('delivered-elsewhere', `${life.nodeId} delivered ${opId} at ${index}; the replicas hold it at ${indexOf.get(opId)}`);
      } else if (idAt.has(index) && idAt.get(index) !== opId) {
        violation('delivered-elsewhere', `${life.nodeId} delivered ${opId} at ${index}, which holds ${idAt.get(index)}`);
      }
    }
    if (!life.wholeRun) continue;
    for (const op of ops) {
      // A node that fell far behind receives a snapshot instead of the entries it covers.
      if (op.outcome === 'ok' && !delivered.has(op.id) && op.index > life.snapshotIndex) {
        violation('not-delivered', `${life.nodeId} ran throughout but never delivered ${op.id}`);
      }
    }
  }

  for (const [term, leaders] of leadersByTerm) {
    if (leaders.size > 1) violation('two-leaders', `term ${term} had leaders ${[...leaders].join(', ')}`);
  }
  return violations;
}

module.exports = { checkHistory };
