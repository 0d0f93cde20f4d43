//! An async client for OpenNebula's XML-RPC API, covering what a VM's lifecycle needs:
//! `one.system.version`, `one.template.instantiate`, `one.vm.allocate`, `one.vm.info`,
//! `one.vmpool.info`, `one.vm.action` and `one.vm.update`. It uses the `xmlrpc` crate's value types to encode
//! requests and parse responses, and does the HTTP exchange itself with an async client (the
//! crate's own transport blocks).
//!
//! Every OpenNebula call answers `[success, result-or-message, error-code, ...]`; a failure
//! becomes [`Error::Api`] with the documented [`ErrorCode`]. VM documents (`<VM>...</VM>`) are
//! parsed into [`Vm`] with its [`VmState`] and [`LcmState`].
//!
//! HTTPS uses rustls; the client installs the `ring` crypto provider unless the process has one.

mod client;
mod error;
#[cfg(feature = "simulator")]
pub mod simulator;
mod vm;

pub use client::{Client, PoolFilter};
pub use error::{Error, ErrorCode};
pub use vm::{LcmState, Vm, VmState};
