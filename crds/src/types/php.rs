//! php: ConPaaS' PHP web hosting. nginx proxies balance requests over php-fpm backends and
//! static-file web nodes; the tiers scale separately, and a leaving node is drained first.

use super::{
    Access, CredentialsDescriptor, RoleDescriptor, SecretValue, SettingCheck, SettingDescriptor,
    TypeDescriptor,
};

/// The Secret holding the password of a php Service's sessions' redis, made by the controller
/// and read by the Service's own nodes only (the proxy that runs the redis, the backends that
/// keep sessions in it).
pub const CREDENTIALS: CredentialsDescriptor = CredentialsDescriptor {
    suffix: "php",
    keys: &[("password", SecretValue::Random)],
    shared_with_links: false,
};

/// The Secret holding a php Service's sessions' password (`password`).
pub fn secret_name(service: &str) -> String {
    CREDENTIALS.secret_name(service)
}

/// The php type.
pub const DESCRIPTOR: TypeDescriptor = TypeDescriptor {
    name: "php",
    summary: "ConPaaS' PHP web hosting: nginx proxies send PHP requests (`*.php`, and paths with no static file) to php-fpm backends and static files to web nodes; the active code version is unpacked on web and backend nodes, sessions are kept in a redis beside the first proxy, which asks for the password in the Secret `<service>-php` (`password`; random unless it exists; read by the Service's own nodes only). `status.url` is the access URL.",
    roles: &[
        RoleDescriptor {
            name: "proxy",
            summary: "nginx on port 80 balancing over the ready backends and web nodes; the lowest ordinal serves `status.url` and the sessions' redis",
            default_count: 1,
            min: 1,
            max: None,
        },
        RoleDescriptor {
            name: "web",
            summary: "nginx serving the code's static files on port 8080 (with none, the backends serve them)",
            default_count: 0,
            min: 0,
            max: None,
        },
        RoleDescriptor {
            name: "backend",
            summary: "php-fpm behind a local nginx on port 8080, running the active code version",
            default_count: 1,
            min: 0,
            max: None,
        },
    ],
    default_role: "backend",
    settings: &[
        SettingDescriptor {
            key: "max_execution_time",
            description: "seconds a script may run",
            default: Some("30"),
            check: SettingCheck::Integer { min: 0, max: 3600 },
        },
        SettingDescriptor {
            key: "memory_limit",
            description: "memory a script may use (`-1`: no limit)",
            default: Some("128M"),
            check: SettingCheck::ByteSize { unlimited: true },
        },
        SettingDescriptor {
            key: "upload_max_filesize",
            description: "largest uploaded file",
            default: Some("2M"),
            check: SettingCheck::ByteSize { unlimited: false },
        },
        SettingDescriptor {
            key: "post_max_size",
            description: "largest request body",
            default: Some("8M"),
            check: SettingCheck::ByteSize { unlimited: false },
        },
        SettingDescriptor {
            key: "display_errors",
            description: "errors shown in the page (ConPaaS' debug mode)",
            default: Some("Off"),
            check: SettingCheck::OneOf(&["On", "Off"]),
        },
        SettingDescriptor {
            key: "log_errors",
            description: "errors written to the backend's log",
            default: Some("On"),
            check: SettingCheck::OneOf(&["On", "Off"]),
        },
        SettingDescriptor {
            key: "disable_functions",
            description: "PHP functions scripts may not call",
            default: Some(""),
            check: SettingCheck::Identifiers,
        },
    ],
    members: true,
    link_exports: &[],
    credentials: Some(&CREDENTIALS),
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
    restart_on_link_change: &[],
};
