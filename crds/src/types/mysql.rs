//! mysql: ConPaaS' MySQL service on MariaDB with Galera: every node is a master of one
//! multi-master cluster, the first bootstraps it and the others join by state transfer.

use super::{Access, RoleDescriptor, SettingCheck, SettingDescriptor, TypeDescriptor};

/// The Secret holding a mysql Service's credentials (`username`, `password`).
pub fn secret_name(service: &str) -> String {
    format!("{service}-mysql")
}

/// The mysql type.
pub const DESCRIPTOR: TypeDescriptor = TypeDescriptor {
    name: "mysql",
    summary: "ConPaaS' MySQL service: MariaDB with Galera, every node a master of one cluster (the first bootstraps it, the others join by state transfer with mariabackup). The credentials are in the Secret `<service>-mysql` (`username`, `password`; a random password unless it exists); the database named by the setting `database` is created at start. A code version is an SQL dump (plain or gzipped; ConPaaS' `Dump`), loaded into that database once when activated; until the first one is in, the nodes are not Ready, and a dump MariaDB refuses fails the node with MariaDB's message. `status.endpoint` is `host:port` for clients: the first `glb` if there is one, else the first mysql node.",
    roles: &[
        RoleDescriptor {
            name: "mysql",
            summary: "a MariaDB Galera node on port 3306; Ready once Synced and answering queries",
            default_count: 1,
            min: 1,
            max: None,
        },
        RoleDescriptor {
            name: "glb",
            summary: "haproxy on port 3306 balancing clients over the Synced mysql nodes (health-checked); a leaving mysql node leaves every glb before it shuts down",
            default_count: 0,
            min: 0,
            max: None,
        },
    ],
    default_role: "mysql",
    settings: &[SettingDescriptor {
        key: "database",
        description: "the database created at start, which links name",
        default: Some("conpaas"),
        check: SettingCheck::Name { max_len: 64 },
    }],
    members: true,
    link_exports: &[
        ("HOST", "the address clients connect to"),
        ("PORT", "its port (3306)"),
        ("USER", "the user of the Secret `<service>-mysql`"),
        ("PASSWORD", "its password"),
        ("DATABASE", "the database of the setting `database`"),
        ("URL", "`mysql://user:password@host:port/database`"),
    ],
    routers: &["glb"],
    drain_seconds: 1,
    access: None,
    endpoint: Some(Access {
        roles: &["glb", "mysql"],
        url: "{address}:3306",
    }),
};
