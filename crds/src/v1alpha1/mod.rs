//! `conpaas.io/v1alpha1`: the four kinds and the types they share.

mod application;
mod cloud;
mod common;
mod service;
mod service_node;

pub use application::*;
pub use cloud::*;
pub use common::*;
pub use service::*;
pub use service_node::*;
