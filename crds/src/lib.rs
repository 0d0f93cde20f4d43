//! ConPaaS API types, group `conpaas.io`, version `v1alpha1`.
//!
//! Start at [`v1alpha1`]: `Cloud` (cluster-scoped, which IaaS), `Application` (groups services),
//! `Service` (what users apply: type, roles with counts, code, settings) and `ServiceNode` (one
//! per VM, written by the controller, reported on by the agent). [`labels`] holds the label,
//! annotation, tag and field-manager names every other crate shares; [`generate`] renders the
//! CRDs that `crdgen` writes into `manifests/crds/`. [`types`] holds one descriptor per service
//! type, from which validation, CEL rules, `cpsctl usage` and the docs are derived.

// Several `printcolumn(...)` arguments of one `#[kube]` attribute repeat `type_ = ...`, which
// clippy mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod archive_digest;
pub mod bootstrap;
pub mod code_api;
pub mod generate;
pub mod labels;
pub mod selector;
pub mod types;
pub mod v1alpha1;
