//! java: ConPaaS' Java web hosting. The same tiers as php: nginx proxies send servlet requests
//! (the WAR's `WEB-INF/web.xml` mappings and `*.jsp`) to Tomcat backends and the rest to web
//! nodes; a leaving node is drained first.

use super::{Access, RoleDescriptor, TypeDescriptor};

/// The java type.
pub const DESCRIPTOR: TypeDescriptor = TypeDescriptor {
    name: "java",
    summary: "ConPaaS' Java web hosting: the code is a `.war` deployed as the root context of Tomcat 10 backends; nginx proxies send servlet paths (the WAR's `WEB-INF/web.xml` mappings and `*.jsp`) to the backends and the rest to web nodes. A new code version is deployed beside the running one (Tomcat's parallel deployment) and takes the next requests. `status.url` is the access URL.",
    roles: &[
        RoleDescriptor {
            name: "proxy",
            summary: "nginx on port 80 balancing over the ready backends and web nodes; the lowest ordinal serves `status.url`",
            default_count: 1,
            min: 1,
            max: None,
        },
        RoleDescriptor {
            name: "web",
            summary: "nginx serving the WAR's static files on port 8080 (never `WEB-INF`, `META-INF` or JSP sources); with none, the backends serve them",
            default_count: 0,
            min: 0,
            max: None,
        },
        RoleDescriptor {
            name: "backend",
            summary: "Tomcat 10 on port 8080 running the active WAR as its root context",
            default_count: 1,
            min: 0,
            max: None,
        },
    ],
    default_role: "backend",
    settings: &[],
    members: true,
    link_exports: &[],
    credentials: None,
    check_count: None,
    runs_user_code: true,
    conpaas_alias: None,
    routers: &["proxy"],
    drain_seconds: 10,
    access: Some(Access {
        roles: &["proxy"],
        url: "http://{address}/",
        seeds: 1,
    }),
    endpoint: None,
    saved_on_stop: None,
    data_copies: None,
    restart_on_link_change: &["backend"],
};
