//! The web node's decisions as pure functions: which parts a role converges and in what order,
//! when a convergence is tried again, and what the node reports from what it saw. `mod.rs`
//! carries the parts out and gathers the facts.

use conpaas_crds::v1alpha1::AgentState;

use super::Stack;

/// A piece of a web node, converged in the order [`parts`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The active code version unpacked and switched to (web nodes, php backends, and a java
    /// proxy, which reads the WAR's servlet paths).
    InstallCode,
    /// php-fpm with the Service's settings and the links' environment; a backend whose links
    /// have no endpoint yet stops here and waits.
    Fpm,
    /// Tomcat deploying the active WAR (java backends).
    Tomcat,
    /// The sessions' redis (the first php proxy).
    Redis,
    /// nginx, rewritten and reloaded gracefully.
    Nginx,
}

/// The parts a role of a stack converges, in order.
pub fn parts(stack: Stack, role: &str) -> &'static [Part] {
    match (stack, role) {
        (Stack::Java, "backend") => &[Part::Tomcat],
        (Stack::Php, "backend") => &[Part::InstallCode, Part::Fpm, Part::Nginx],
        (Stack::Php, "proxy") => &[Part::Redis, Part::Nginx],
        _ => &[Part::InstallCode, Part::Nginx],
    }
}

/// Whether the role's nginx serves the code (php backends, web nodes), so Ready waits for a
/// request to show the active version served.
pub fn serves_code_from_nginx(stack: Stack, role: &str) -> bool {
    role == "web" || (role == "backend" && stack == Stack::Php)
}

/// What a web node saw at one look.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// Why the role cannot run (a missing daemon, a refused configuration).
    pub error: Option<String>,
    /// A daemon that died, until the restarted one listens.
    pub dead: Option<String>,
    /// Why the active code version could not be installed (the previous one keeps serving).
    pub code_error: Option<String>,
    /// Tomcat refused the active WAR.
    pub refused: Option<String>,
    /// A request for the active version through the node's own server failed.
    pub not_served: Option<String>,
    /// What the node waits for (a linked volume, a linked service's endpoint).
    pub waiting: Option<String>,
    /// Why the active code version is not installed yet while the node may not read it yet.
    pub code_waiting: Option<String>,
    /// A java backend leaves the proxies before Tomcat restarts for a new link environment.
    pub restarting: bool,
    /// Its server listens.
    pub listening: bool,
    /// The request for the active version has not answered yet.
    pub checking: bool,
}

impl Seen {
    /// Something is to be tried again (a Secret not yet readable, a linked service without an
    /// endpoint, a failed install): not left until the next spec.
    pub fn converge_again(&self, restart_due: bool) -> bool {
        self.waiting.is_some()
            || restart_due
            || self.error.is_some()
            || self.code_error.is_some()
            || self.code_waiting.is_some()
    }
}

/// What the node reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub state: AgentState,
    pub message: String,
    /// The active code version could not be switched to, and the node serves the one it runs.
    pub code_failed: bool,
}

/// The node's state and message from what it saw; `serving` says where it serves when Ready.
pub fn health(seen: &Seen, role: &str, serving: &str) -> Health {
    let failure = [
        &seen.error,
        &seen.dead,
        &seen.code_error,
        &seen.refused,
        &seen.not_served,
    ]
    .into_iter()
    .find_map(Option::as_ref);
    // Only a version it could not switch to leaves the node serving the one it runs.
    let code_failed = seen.error.is_none()
        && seen.dead.is_none()
        && (seen.code_error.is_some() || seen.refused.is_some());
    let (state, message) = match failure {
        Some(e) => (AgentState::Failed, e.clone()),
        None if seen.waiting.is_some() => (
            AgentState::Starting,
            seen.waiting.clone().unwrap_or_default(),
        ),
        None if seen.restarting => (
            AgentState::Starting,
            "leaving the proxies to restart Tomcat for a new link environment".into(),
        ),
        None if !seen.listening => (
            AgentState::Starting,
            seen.code_waiting
                .clone()
                .unwrap_or_else(|| format!("starting {role}")),
        ),
        None if seen.checking => (
            AgentState::Starting,
            "checking that the code version is served".into(),
        ),
        None => {
            let message = match &seen.code_waiting {
                Some(waiting) => format!("{serving}; waiting to read {waiting}"),
                None => serving.to_string(),
            };
            (AgentState::Ready, message)
        }
    };
    Health {
        state,
        message,
        code_failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Seen {
        Seen {
            listening: true,
            ..Seen::default()
        }
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn each_role_converges_its_own_parts_nginx_last() {
        use Part::*;
        assert_eq!(parts(Stack::Php, "backend"), [InstallCode, Fpm, Nginx]);
        assert_eq!(parts(Stack::Php, "proxy"), [Redis, Nginx]);
        assert_eq!(parts(Stack::Php, "web"), [InstallCode, Nginx]);
        assert_eq!(parts(Stack::Java, "backend"), [Tomcat]);
        // A java proxy reads the WAR's servlet paths to route them.
        assert_eq!(parts(Stack::Java, "proxy"), [InstallCode, Nginx]);
        assert_eq!(parts(Stack::Java, "web"), [InstallCode, Nginx]);
        assert!(serves_code_from_nginx(Stack::Php, "backend"));
        assert!(serves_code_from_nginx(Stack::Java, "web"));
        assert!(!serves_code_from_nginx(Stack::Java, "backend"));
        assert!(!serves_code_from_nginx(Stack::Php, "proxy"));
    }

    #[test]
    fn a_listening_node_with_its_code_served_is_ready() {
        let h = health(&ready(), "web", "web serving http://10.0.0.2:8080/");
        assert_eq!(h.state, AgentState::Ready);
        assert_eq!(h.message, "web serving http://10.0.0.2:8080/");
        assert!(!h.code_failed);
    }

    #[test]
    fn ready_waits_for_the_listening_server_and_the_served_version() {
        let starting = health(&Seen::default(), "web", "web serving");
        assert_eq!(
            (starting.state, starting.message.as_str()),
            (AgentState::Starting, "starting web")
        );
        let checking = Seen {
            checking: true,
            ..ready()
        };
        assert_eq!(health(&checking, "web", "web").state, AgentState::Starting);
        let not_served = Seen {
            not_served: some("GET /.conpaas-serving: 404"),
            ..ready()
        };
        let h = health(&not_served, "web", "web");
        assert_eq!(h.state, AgentState::Failed);
        assert_eq!(h.message, "GET /.conpaas-serving: 404");
    }

    #[test]
    fn a_failure_outranks_waiting_and_the_first_failure_is_told() {
        let seen = Seen {
            error: some("nginx refused its configuration"),
            dead: some("nginx exited"),
            waiting: some("waiting for db's endpoint"),
            ..ready()
        };
        let h = health(&seen, "web", "web");
        assert_eq!(h.state, AgentState::Failed);
        assert_eq!(h.message, "nginx refused its configuration");
        assert!(!h.code_failed);
        let waiting = Seen {
            waiting: some("waiting for db's endpoint"),
            restarting: true,
            ..ready()
        };
        assert_eq!(
            health(&waiting, "web", "web").message,
            "waiting for db's endpoint"
        );
        let restarting = Seen {
            restarting: true,
            ..ready()
        };
        assert_eq!(
            health(&restarting, "web", "web").state,
            AgentState::Starting
        );
    }

    #[test]
    fn only_a_version_that_could_not_be_switched_to_is_a_failed_code_version() {
        let bad_archive = Seen {
            code_error: some("code version v2: not a tar archive"),
            ..ready()
        };
        let h = health(&bad_archive, "web", "web");
        assert_eq!(h.state, AgentState::Failed);
        assert!(h.code_failed);
        let refused_war = Seen {
            refused: some("code version v2: Tomcat refused the WAR"),
            ..ready()
        };
        assert!(health(&refused_war, "backend", "backend").code_failed);
        // A daemon that died is the node's failure, not the version's.
        let dead_too = Seen {
            dead: some("php-fpm exited"),
            ..bad_archive
        };
        assert!(!health(&dead_too, "web", "web").code_failed);
    }

    #[test]
    fn a_version_not_readable_yet_keeps_the_running_one_serving() {
        let seen = Seen {
            code_waiting: some("the Secret of the code"),
            ..ready()
        };
        let h = health(&seen, "web", "web serving http://10.0.0.2:8080/");
        assert_eq!(h.state, AgentState::Ready);
        assert_eq!(
            h.message,
            "web serving http://10.0.0.2:8080/; waiting to read the Secret of the code"
        );
        assert!(seen.converge_again(false));
        assert!(!ready().converge_again(false));
        assert!(ready().converge_again(true));
    }
}
