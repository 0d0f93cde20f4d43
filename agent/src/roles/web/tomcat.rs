//! A java backend's Tomcat 10: its own `CATALINA_BASE` under the node's work folder, one HTTP
//! connector on the node's address, and the active WAR deployed as the root context.
//!
//! A new code version is deployed beside the running one with Tomcat's parallel deployment
//! (`ROOT##<sequence>.xml` descriptors, the highest sequence taking new requests), so a switch
//! drops no request; the older descriptors are removed once the new one is deployed. Tomcat says
//! when a descriptor is deployed, or why it failed, in its log, which is where the agent looks.
//! The link environment is the JVM's, so a change of it restarts Tomcat.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conpaas_crds::v1alpha1::NodeCode;
use nix::sys::signal::Signal;

use super::config::NODE_PORT;
use crate::daemon::{self, Daemon};

/// Where Debian's tomcat10 lives.
const CATALINA_HOMES: [&str; 2] = ["/usr/share/tomcat10", "/opt/tomcat"];
/// How long Tomcat gets to finish its requests when it stops.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How much of the end of Tomcat's log is read for a deployment's outcome.
const LOG_TAIL: u64 = 256 << 10;

pub struct Tomcat {
    base: PathBuf,
    log: PathBuf,
    address: String,
    user: Option<&'static str>,
    daemon: Option<Daemon>,
    /// The environment the running Tomcat was started with.
    env: Option<BTreeMap<String, String>>,
    /// The version whose descriptor was written, with the descriptor.
    deploying: Option<(NodeCode, PathBuf)>,
    /// The version serving.
    pub deployed: Option<NodeCode>,
    /// A version Tomcat refused, not tried again, and why.
    refused: Option<(NodeCode, String)>,
    /// The last descriptor sequence used: never reused, so an earlier attempt's outcome in the
    /// log is never read as a later one's.
    last_sequence: u32,
}

impl Tomcat {
    pub fn new(work_dir: &Path, address: &str, user: Option<&'static str>) -> Self {
        Self {
            base: work_dir.join("java/tomcat"),
            log: work_dir.join("logs/tomcat.log"),
            address: address.to_string(),
            user,
            daemon: None,
            env: None,
            deploying: None,
            deployed: None,
            refused: None,
            last_sequence: 0,
        }
    }

    fn descriptors(&self) -> PathBuf {
        self.base.join("conf/Catalina/localhost")
    }

    /// Why the version the spec names does not serve, if Tomcat refused it.
    pub fn refused(&self, code: &NodeCode) -> Option<&str> {
        self.refused
            .as_ref()
            .filter(|(c, _)| c == code)
            .map(|(_, why)| why.as_str())
    }

    /// Whether a running Tomcat was started with another environment than `env`.
    pub fn needs_restart(&mut self, env: &BTreeMap<String, String>) -> bool {
        let running = self.daemon.as_mut().is_some_and(|d| d.running());
        running && self.env.as_ref().is_some_and(|started| started != env)
    }

    /// Converges to `code` (unpacked at its folder) with `env`: its base folder, a descriptor
    /// for a new version, a start, or a restart when the environment changed (then `true`).
    pub async fn converge(
        &mut self,
        code: Option<(&NodeCode, &Path)>,
        env: &BTreeMap<String, String>,
    ) -> Result<bool, String> {
        let home = CATALINA_HOMES
            .iter()
            .map(PathBuf::from)
            .find(|h| h.join("bin/catalina.sh").is_file())
            .ok_or_else(|| {
                format!(
                    "Tomcat 10 not found in {} (Debian package tomcat10)",
                    CATALINA_HOMES.join(", ")
                )
            })?;
        self.prepare(&home)?;
        if let Some((code, folder)) = code {
            let wanted = self
                .deploying
                .as_ref()
                .map(|(c, _)| c)
                .or(self.deployed.as_ref());
            if wanted != Some(code) && self.refused(code).is_none() {
                self.deploy(code, folder)?;
            }
        }
        let mut restarted = false;
        if self.env.as_ref().is_some_and(|running| running != env)
            && let Some(daemon) = self.daemon.as_mut()
            && daemon.running()
        {
            tracing::info!("the link environment changed: restarting Tomcat");
            daemon.stop(STOP_GRACE).await;
            restarted = true;
        }
        let user = self.user;
        let (base, log) = (self.base.clone(), self.log.clone());
        let daemon = self.daemon.get_or_insert_with(|| {
            let catalina = home.join("bin/catalina.sh").display().to_string();
            let (program, args) = match user {
                // setpriv execs Tomcat, so the pid is Tomcat's own and signals reach it.
                Some(user) => (
                    PathBuf::from("/usr/bin/setpriv"),
                    vec![
                        format!("--reuid={user}"),
                        format!("--regid={user}"),
                        "--init-groups".into(),
                        catalina,
                        "run".into(),
                    ],
                ),
                None => (PathBuf::from(catalina), vec!["run".into()]),
            };
            Daemon::new("tomcat", program, args, log, Signal::SIGTERM)
        });
        let mut full_env = vec![
            ("CATALINA_HOME".to_string(), home.display().to_string()),
            ("CATALINA_BASE".into(), base.display().to_string()),
            (
                "CATALINA_TMPDIR".into(),
                base.join("temp").display().to_string(),
            ),
            (
                "JAVA_OPTS".into(),
                "-Djava.awt.headless=true -XX:+UseSerialGC".into(),
            ),
        ];
        full_env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        daemon.set_env(full_env);
        if !daemon.running() {
            self.env = Some(env.clone());
        }
        daemon.ensure_started()?;
        Ok(restarted)
    }

    /// The base folder: Tomcat's default `web.xml` (the JSP and default servlets), our
    /// `server.xml`, and the folders Tomcat writes, owned by the user it runs as.
    fn prepare(&self, home: &Path) -> Result<(), String> {
        for sub in ["conf/Catalina/localhost", "logs", "temp", "work", "webapps"] {
            let path = self.base.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|e| format!("create {}: {e}", path.display()))?;
        }
        let web_xml = self.base.join("conf/web.xml");
        if !web_xml.is_file() {
            let default = [
                PathBuf::from("/etc/tomcat10/web.xml"),
                home.join("etc/web.xml"),
                home.join("conf/web.xml"),
            ]
            .into_iter()
            .find(|p| p.is_file())
            .ok_or("Tomcat's default web.xml not found (Debian package tomcat10)")?;
            std::fs::copy(&default, &web_xml)
                .map_err(|e| format!("copy {}: {e}", default.display()))?;
        }
        daemon::write_if_changed(
            &self.base.join("conf/server.xml"),
            &server_xml(&self.address),
        )?;
        if let Some(user) = self.user {
            let _ = std::process::Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(&self.base)
                .status();
        }
        Ok(())
    }

    /// Writes the descriptor of `code` with the next sequence number.
    fn deploy(&mut self, code: &NodeCode, folder: &Path) -> Result<(), String> {
        let newest = descriptor_sequences(&self.descriptors())
            .last()
            .map_or(0, |(n, _)| *n);
        let next = newest.max(self.last_sequence) + 1;
        self.last_sequence = next;
        let path = self.descriptors().join(format!("ROOT##{next:06}.xml"));
        std::fs::write(&path, context_xml(folder))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        tracing::info!(version = %code.version, descriptor = %path.display(), "deploying");
        self.deploying = Some((code.clone(), path));
        Ok(())
    }

    /// Notes the outcome of a deployment in progress from Tomcat's log; once the new version
    /// serves, the older ones are removed (Tomcat undeploys them after their requests).
    pub fn poll(&mut self) {
        let Some((code, descriptor)) = self.deploying.clone() else {
            return;
        };
        match deployment_outcome(&read_tail(&self.log), &descriptor.display().to_string()) {
            None => {}
            Some(Ok(())) => {
                tracing::info!(version = %code.version, "code version serving");
                for (_, older) in descriptor_sequences(&self.descriptors()) {
                    if older != descriptor {
                        let _ = std::fs::remove_file(older);
                    }
                }
                self.deployed = Some(code);
                self.deploying = None;
            }
            Some(Err(why)) => {
                let _ = std::fs::remove_file(&descriptor);
                self.refused = Some((code, why));
                self.deploying = None;
            }
        }
    }

    pub fn daemon(&mut self) -> Option<&mut Daemon> {
        self.daemon.as_mut()
    }

    /// Whether the running Tomcat serves the deployed version (its connector opens only after
    /// the startup deployments).
    pub async fn serving(&self) -> bool {
        self.deployed.is_some() && daemon::listening(&format!("{}:{NODE_PORT}", self.address)).await
    }
}

/// Tomcat's `server.xml`: no shutdown port, one HTTP connector on the node's address, the
/// clients' address and scheme from the proxy's `X-Forwarded-*`, descriptors looked at every
/// second, and versions deployed side by side.
pub fn server_xml(address: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by the ConPaaS agent. -->
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector address="{address}" port="{NODE_PORT}" protocol="HTTP/1.1" connectionTimeout="20000"/>
    <Engine name="Catalina" defaultHost="localhost" backgroundProcessorDelay="1">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="true" deployOnStartup="true">
        <Valve className="org.apache.catalina.valves.RemoteIpValve" portHeader="X-Forwarded-Port" protocolHeader="X-Forwarded-Proto"/>
      </Host>
    </Engine>
  </Service>
</Server>
"#
    )
}

/// The root context's descriptor for a WAR unpacked at `folder`; once undeployed (its descriptor
/// removed when a newer one serves) it lets requests in flight finish for up to 30 s.
pub fn context_xml(folder: &Path) -> String {
    let folder = folder
        .display()
        .to_string()
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    format!("<Context docBase=\"{folder}\" unloadDelay=\"30000\"/>\n")
}

/// The `ROOT##<n>.xml` descriptors in `dir`, by sequence.
fn descriptor_sequences(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name
                .strip_prefix("ROOT##")?
                .strip_suffix(".xml")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// The end of a log file.
fn read_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What Tomcat's log says of the last deployment of `descriptor`: done, refused (with Tomcat's
/// words), or nothing yet.
pub fn deployment_outcome(log: &str, descriptor: &str) -> Option<Result<(), String>> {
    let start = log.rfind(&format!("Deploying deployment descriptor [{descriptor}]"))?;
    let after = &log[start..];
    if after.contains(&format!(
        "Deployment of deployment descriptor [{descriptor}] has finished"
    )) {
        // Tomcat logs a context that failed to start before "has finished".
        if let Some(line) = after.lines().find(|l| {
            l.contains("startup failed")
                || l.contains("failed to start")
                || l.contains("Error deploying")
        }) {
            return Some(Err(format!("Tomcat could not start it: {}", line.trim())));
        }
        return Some(Ok(()));
    }
    after
        .lines()
        .find(|l| l.contains("Error deploying"))
        .map(|l| Err(format!("Tomcat could not deploy it: {}", l.trim())))
}

/// The servlet paths a WAR's `WEB-INF/web.xml` maps (`<url-pattern>`), comments left out.
pub fn servlet_patterns(web_xml: &str) -> Vec<String> {
    let mut text = web_xml.to_string();
    while let Some(start) = text.find("<!--") {
        let end = text[start..]
            .find("-->")
            .map_or(text.len(), |e| start + e + 3);
        text.replace_range(start..end, "");
    }
    let mut patterns = Vec::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find("<url-pattern>") {
        rest = &rest[open + "<url-pattern>".len()..];
        let Some(close) = rest.find("</url-pattern>") else {
            break;
        };
        let pattern = rest[..close].trim().to_string();
        if !patterns.contains(&pattern) {
            patterns.push(pattern);
        }
        rest = &rest[close..];
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servlet_patterns_come_from_the_mappings_not_from_comments() {
        let web_xml = r#"<web-app>
  <!-- <servlet-mapping><url-pattern>/old/*</url-pattern></servlet-mapping> -->
  <servlet-mapping><servlet-name>a</servlet-name><url-pattern>/api/*</url-pattern></servlet-mapping>
  <servlet-mapping><servlet-name>b</servlet-name><url-pattern> *.do </url-pattern>
    <url-pattern>/api/*</url-pattern></servlet-mapping>
</web-app>"#;
        assert_eq!(servlet_patterns(web_xml), ["/api/*", "*.do"]);
    }

    #[test]
    fn a_deployment_is_done_refused_or_pending_as_the_log_says() {
        let d = "/n/java/tomcat/conf/Catalina/localhost/ROOT##000002.xml";
        let pending = format!("INFO: Deploying deployment descriptor [{d}]\n");
        assert_eq!(deployment_outcome(&pending, d), None);
        let done = format!(
            "{pending}INFO: Deployment of deployment descriptor [{d}] has finished in [1,692] ms\n"
        );
        assert_eq!(deployment_outcome(&done, d), Some(Ok(())));
        let failed = format!(
            "{pending}SEVERE: Context [##000002] startup failed due to previous errors\nINFO: Deployment of deployment descriptor [{d}] has finished in [90] ms\n"
        );
        let why = deployment_outcome(&failed, d).unwrap().unwrap_err();
        assert!(why.contains("startup failed"), "{why}");
        // An earlier run's outcome for the same descriptor does not count.
        let redeploying = format!("{done}{pending}");
        assert_eq!(deployment_outcome(&redeploying, d), None);
    }

    #[test]
    fn tomcat_listens_on_the_nodes_address_only() {
        let xml = server_xml("10.0.0.2");
        assert!(xml.contains(r#"address="10.0.0.2" port="8080""#), "{xml}");
        assert!(xml.contains(r#"<Server port="-1""#));
        assert_eq!(
            context_xml(Path::new("/n/code/v1-abc")),
            "<Context docBase=\"/n/code/v1-abc\" unloadDelay=\"30000\"/>\n"
        );
    }
}
