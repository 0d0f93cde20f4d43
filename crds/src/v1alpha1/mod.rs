//! `conpaas.io/v1alpha1`: the five kinds and the types they share.

mod application;
mod cloud;
mod common;
mod credit_account;
mod service;
mod service_node;

pub use application::*;
pub use cloud::*;
pub use common::*;
pub use credit_account::*;
pub use service::*;
pub use service_node::*;
