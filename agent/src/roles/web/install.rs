//! A web node's code: the active version fetched and unpacked (readable by the workers, the
//! serving probe's marker in it, linked volumes linked in), then served by switching the `www`
//! symlink in one rename, or read (a java proxy's servlet paths).

use std::path::{Path, PathBuf};

use conpaas_crds::v1alpha1::{NodeCode, ServiceNodeSpec};

use super::{Stack, WebHosting, serving, switch_symlink, tomcat};
use crate::code;

impl WebHosting {
    /// Installs the spec's code version: unpacked, then served (the `www` symlink switched, or
    /// deployed to Tomcat), or read (a java proxy's servlet paths).
    pub(super) async fn install_code(&mut self, spec: &ServiceNodeSpec) {
        if spec.code == self.installed {
            return;
        }
        let Some(code) = &spec.code else {
            // No active version: serve nothing.
            let empty = self.env.work_dir.join("empty");
            match switch_symlink(&self.www(), &empty) {
                Ok(()) => {
                    self.installed = None;
                    self.code_error = None;
                    self.serving.expect(None);
                }
                Err(e) => self.code_error = Some(e),
            }
            return;
        };
        let Some(dir) = self.unpack_code(spec, code).await else {
            return;
        };
        let java_proxy = self.stack == Stack::Java && self.role == "proxy";
        if java_proxy {
            self.servlet_patterns = read_servlet_patterns(&dir);
        }
        match switch_symlink(&self.www(), &dir) {
            Ok(()) => {
                tracing::info!(version = %code.version, "code version serving");
                self.installed = Some(code.clone());
                if super::lifecycle::serves_code_from_nginx(self.stack, &self.role) {
                    self.serving.expect(Some(&code.version));
                }
                self.code_error = None;
                self.code_waiting = None;
            }
            Err(e) => self.code_error = Some(format!("code version {}: {e}", code.version)),
        }
    }

    /// Fetches and unpacks `code` (readable by the workers); `None`, with the reason noted, when
    /// that failed.
    pub(super) async fn unpack_code(
        &mut self,
        spec: &ServiceNodeSpec,
        code: &NodeCode,
    ) -> Option<PathBuf> {
        let installed = code::install(
            &self.env.client,
            &self.env.namespace,
            &spec.service,
            code,
            &self.env.work_dir,
        )
        .await;
        match installed {
            Ok(dir) => {
                // What the serving probe asks nginx for.
                if let Err(e) = serving::mark(&dir, &code.version) {
                    self.code_error = Some(format!("code version {}: {e}", code.version));
                    return None;
                }
                make_readable(&dir);
                if let Err(e) = self.mounts.link_into(&dir) {
                    self.code_error = Some(format!("code version {}: {e}", code.version));
                    return None;
                }
                Some(dir)
            }
            Err(e) => {
                self.code_failed(&code.version, e);
                None
            }
        }
    }

    /// Notes why the code version could not be installed: a node whose credentials have not
    /// caught up with its spec yet (they follow it) waits, and keeps serving what it has;
    /// anything else is a failure.
    fn code_failed(&mut self, version: &str, error: anyhow::Error) {
        let message = format!("code version {version}: {error:#}");
        if code::is_forbidden(&error) {
            self.code_waiting = Some(message);
            self.code_error = None;
        } else {
            self.code_error = Some(message);
            self.code_waiting = None;
        }
    }
}

/// The servlet paths of the WAR unpacked at `dir` (none without a `WEB-INF/web.xml`).
fn read_servlet_patterns(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("WEB-INF/web.xml"))
        .map(|xml| tomcat::servlet_patterns(&xml))
        .unwrap_or_default()
}

/// Unpacked code is readable by the workers whatever the archive's modes said.
fn make_readable(dir: &Path) {
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status();
}
