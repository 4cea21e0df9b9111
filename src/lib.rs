//! `@unrdf/consensus`: Raft consensus for Node.js. The napi exports live in `binding`; the rest
//! of the crate is the engine, storage and transport.

pub mod events;
pub mod storage;
pub mod types;
