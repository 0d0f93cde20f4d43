//! What the Service loop decides, without acting on it: [`service::preview`] observes a Service
//! (reads only), validates it and plans its node actions. The controller's Service loop acts on
//! the plan; `cpsctl plan` prints it. Nothing here writes to the API server, calls a cloud or
//! keeps metrics, so the CLI can use it without the controller's runtime.
//!
//! Also here because both sides read them: [`conditions`] (conditions whose transition time
//! moves only on a flip), [`node_reasons`] (what a node's Ready reason means) and [`list`]
//! (a LIST that survives unreadable objects).

pub mod conditions;
pub mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
pub mod list;
pub mod node_reasons;
pub mod service;

pub use error::Error;
