//! `@unrdf/consensus`: Raft consensus for Node.js. The napi exports live in `binding`; the rest
//! of the crate is the engine, storage and transport.

// Unit tests run without Node.js, where napi's registration has nothing to bind to.
#[cfg(not(test))]
mod binding;
pub mod engine;
pub mod events;
pub mod storage;
pub mod transport;
pub mod types;
