'use strict';
// The history check of a chaos run, apart from the run so that it can be tested on histories
// made up to break each rule.

/**
 * @param {object} history
 * @param {Array<{id: string, outcome: 'ok'|'indeterminate'|'error', index?: number, term?: number}>} history.ops
 *   what the clients did: `ok` ones were acknowledged at `index`/`term`.
 * @param {Map<string, Map<string, {logIndex: number, term: number}|null>>} history.replicas
 *   per node, where its state machine applied each operation id (null: not applied).
 * @param {Array<{nodeId: string, entries: Array<[number, number, string|null]>}>} history.lifetimes
 *   per node process, what it delivered in order (`[index, term, operationId]`).
 * @param {Map<string, Array<[number, string]>>} history.daemons per node, at the end of the run,
 *   what its daemon holds (`[index, operationId]` in the order it took them): every node, also
 *   one killed, restarted or wiped and re-added, must hold every acknowledged operation once,
 *   in log order (what a snapshot covered arrives through the daemon's restore).
 * @param {Map<number, Set<string>>} history.leadersByTerm every leader seen in each term.
 * @returns {Array<{kind: string, detail: string}>}
 */
function checkHistory({ ops, replicas, lifetimes, daemons, leadersByTerm }) {
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
  }

  for (const [nodeId, held] of daemons) {
    const at = new Map(); // operation id -> index the daemon holds it at
    let last = -1;
    for (const [index, opId] of held) {
      if (at.has(opId)) violation('daemon-twice', `${nodeId}'s daemon holds ${opId} twice`);
      if (index <= last) violation('daemon-order', `${nodeId}'s daemon took index ${index} after ${last}`);
      last = Math.max(last, index);
      at.set(opId, index);
      if (indexOf.has(opId) && indexOf.get(opId) !== index) {
        violation('daemon-elsewhere', `${nodeId}'s daemon holds ${opId} at ${index}; the replicas hold it at ${indexOf.get(opId)}`);
      }
    }
    for (const op of ops) {
      if (op.outcome === 'ok' && !at.has(op.id)) violation('not-delivered', `${nodeId}'s daemon does not hold ${op.id}`);
    }
  }

  for (const [term, leaders] of leadersByTerm) {
    if (leaders.size > 1) violation('two-leaders', `term ${term} had leaders ${[...leaders].join(', ')}`);
  }
  return violations;
}

module.exports = { checkHistory };
