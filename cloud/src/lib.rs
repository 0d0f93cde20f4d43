//! Where ConPaaS VMs come from.
//!
//! [`ComputeDriver`] is the one small trait every IaaS backend implements; [`CloudError`] is the
//! semantic error they all map into, so reconcilers branch on meaning, never on a provider's
//! text. Backends are feature-gated modules: [`local`] (each VM is a detached agent process on
//! this host; the embedded default) and [`memory`] (an in-process fake that is a real backend).
//! `conformance` (feature `testing`) is the suite every backend passes; `faulty` (same feature)
//! makes any backend refuse chosen calls.

mod driver;
mod error;

#[cfg(feature = "local")]
mod cgroup;
#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "ec2")]
pub mod ec2;
#[cfg(feature = "testing")]
pub mod faulty;
#[cfg(any(feature = "ec2", feature = "opennebula"))]
mod limits;
#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "testing")]
pub mod moto;
#[cfg(feature = "opennebula")]
pub mod opennebula;

pub use driver::{ComputeDriver, CreateRequest, Tags, Vm, VmSize, VmState};
pub use error::CloudError;
