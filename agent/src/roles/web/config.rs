//! The php nodes' configuration files, rendered from what the node knows. Pure: tested on text.

use std::collections::BTreeMap;
use std::path::Path;

/// Port of the proxies.
pub const PROXY_PORT: u16 = 80;
/// Port of the web and backend nodes' nginx.
pub const NODE_PORT: u16 = 8080;
/// Port of the sessions' redis beside the first proxy.
pub const REDIS_PORT: u16 = 6379;

/// Extensions the proxy sends to the web nodes (the rest goes to the backends), as ConPaaS'
/// proxy split static from dynamic requests.
const STATIC: &str = "css|js|mjs|map|png|jpe?g|gif|ico|svg|webp|avif|bmp|woff2?|ttf|otf|eot|txt|html?|xml|pdf|zip|gz|mp4|webm|ogg|mp3|wav";

/// Which requests a proxy sends to the backends when there are web nodes.
pub enum Dynamic {
    /// Everything but static files (php).
    Php,
    /// The servlet paths of the WAR's `web.xml` and JSPs; everything else goes to the web nodes
    /// (java).
    Servlets(Vec<String>),
}

/// nginx locations for servlet url-patterns, plus JSPs; `None` when a servlet answers every
/// path. A pattern with characters nginx or the URL would read differently is left out: its
/// requests still reach the backends, through the web nodes' 404.
fn servlet_locations(patterns: &[String]) -> Option<Vec<String>> {
    let plain = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._~-".contains(c))
    };
    let mut locations = vec!["~* \\.jspx?$".to_string()];
    for p in patterns {
        let p = p.as_str();
        if p == "/" || p == "/*" {
            return None;
        }
        if p.is_empty() {
            locations.push("= /".into());
        } else if let Some(ext) = p.strip_prefix("*.") {
            if ext.chars().all(|c| c.is_ascii_alphanumeric()) && !ext.is_empty() {
                locations.push(format!("~ \\.{ext}$"));
            }
        } else if let Some(prefix) = p.strip_suffix("/*") {
            if prefix.starts_with('/') && plain(prefix) {
                locations.push(format!("= {prefix}"));
                locations.push(format!("^~ {prefix}/"));
            }
        } else if p.starts_with('/') && plain(p) {
            locations.push(format!("= {p}"));
        }
    }
    let mut unique = Vec::new();
    for l in locations {
        // nginx refuses a location given twice (`/a` and `/a/*` both map `= /a`).
        if !unique.contains(&l) {
            unique.push(l);
        }
    }
    Some(unique)
}

/// What every nginx of a node shares: foreground, its own pid, logs and temp folders.
fn nginx_main(dir: &Path, user: Option<&str>, server: &str) -> String {
    let d = dir.display();
    let user = user.map_or(String::new(), |u| format!("user {u};\n"));
    format!(
        "# Written by the ConPaaS agent.
{user}daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/../logs/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    server_tokens off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
{server}}}
"
    )
}

/// The proxy: dynamic requests to the backends, static files to the web nodes (a 404 there
/// falls back to the backends, which serve every file too); with no web node, all to the
/// backends. No ready backend: 503 until one is.
pub fn proxy_nginx(
    dir: &Path,
    user: Option<&str>,
    address: &str,
    backends: &[String],
    webs: &[String],
    max_body: &str,
    dynamic: &Dynamic,
) -> String {
    let upstream = |name: &str, servers: &[String]| {
        let lines: String = servers
            .iter()
            .map(|s| format!("        server {s}:{NODE_PORT} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        format!("    upstream {name} {{\n{lines}        keepalive 16;\n    }}\n")
    };
    let mut server = String::new();
    if !backends.is_empty() {
        server.push_str(&upstream("backends", backends));
    }
    if !webs.is_empty() {
        server.push_str(&upstream("webs", webs));
    }
    let to_backends = if backends.is_empty() {
        "return 503;"
    } else {
        "proxy_pass http://backends;"
    };
    let to_webs = "proxy_pass http://webs;
            proxy_intercept_errors on;
            error_page 404 = @backends;";
    let (routes, default) = match dynamic {
        _ if webs.is_empty() => (String::new(), to_backends.to_string()),
        Dynamic::Php => (
            format!("        location ~* \\.({STATIC})$ {{\n            {to_webs}\n        }}\n"),
            to_backends.to_string(),
        ),
        Dynamic::Servlets(patterns) => match servlet_locations(patterns) {
            // A servlet on `/` or `/*` answers everything.
            None => (String::new(), to_backends.to_string()),
            Some(locations) => (
                locations
                    .iter()
                    .map(|l| format!("        location {l} {{ {to_backends} }}\n"))
                    .collect(),
                format!("\n            {to_webs}\n        "),
            ),
        },
    };
    // Each request's response time, which the agent aggregates for the autoscaler.
    let requests_log = dir.join("../logs/requests.log");
    let requests_log = requests_log.display();
    server.push_str(&format!(
        "    log_format timing '$request_time';
    map $http_x_forwarded_proto $forwarded_proto {{ default $http_x_forwarded_proto; \"\" $scheme; }}
    server {{
        listen {address}:{PROXY_PORT};
        access_log {requests_log} timing;
        client_max_body_size {max_body};
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        proxy_set_header Host $http_host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $forwarded_proto;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header X-Forwarded-Port $server_port;
        proxy_read_timeout 3600s;
        proxy_next_upstream error timeout http_502;
{routes}        location / {{ {default} }}
        location @backends {{ {to_backends} }}
    }}
"
    ));
    nginx_main(dir, user, &server)
}

/// A web node: the code's static files, never the `hidden` paths (regular expressions: PHP
/// sources, a WAR's `WEB-INF`).
pub fn web_nginx(
    dir: &Path,
    user: Option<&str>,
    address: &str,
    root: &Path,
    hidden: &[&str],
) -> String {
    let hidden: String = hidden
        .iter()
        .map(|h| format!("        location ~* {h} {{ return 404; }}\n"))
        .collect();
    let server = format!(
        "    server {{
        listen {address}:{NODE_PORT};
        root {root};
        index index.html index.htm;
{hidden}        location / {{ try_files $uri $uri/ =404; }}
{marker}    }}
",
        root = root.display(),
        marker = marker(address),
    );
    nginx_main(dir, user, &server)
}

/// The serving probe's file ([`super::serving::MARKER`]) answers the node itself only (the probe
/// asks from the node's own address): through a proxy it is not there.
fn marker(address: &str) -> String {
    format!(
        "        location = /{} {{ allow {address}; deny all; }}\n",
        super::serving::MARKER
    )
}

/// A backend's nginx: its files, and PHP through the local php-fpm. The Host the client used
/// (port included) and the forwarded scheme reach the application; a request resolves the code
/// folder once (`$realpath_root`), so a version switch never mixes two versions in one request.
pub fn backend_nginx(
    dir: &Path,
    user: Option<&str>,
    address: &str,
    root: &Path,
    socket: &Path,
    max_body: &str,
) -> String {
    let server = format!(
        "    map $http_x_forwarded_proto $forwarded_https {{ default \"\"; https on; }}
    map $http_x_forwarded_port $forwarded_port {{ default $http_x_forwarded_port; \"\" $server_port; }}
    server {{
        listen {address}:{NODE_PORT};
        root {root};
        index index.php index.html index.htm;
        client_max_body_size {max_body};
        set_real_ip_from 0.0.0.0/0;
        real_ip_header X-Forwarded-For;
        location / {{ try_files $uri $uri/ /index.php$is_args$args; }}
{marker}        location ~ [^/]\\.php(/|$) {{
            fastcgi_split_path_info ^(.+?\\.php)(/.*)$;
            if (!-f $realpath_root$fastcgi_script_name) {{ return 404; }}
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
            fastcgi_param DOCUMENT_ROOT $realpath_root;
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_param HTTP_HOST $http_host;
            fastcgi_param SERVER_PORT $forwarded_port;
            fastcgi_param HTTPS $forwarded_https if_not_empty;
            fastcgi_read_timeout 3600s;
            fastcgi_pass unix:{socket};
        }}
    }}
",
        root = root.display(),
        socket = socket.display(),
        marker = marker(address),
    );
    nginx_main(dir, user, &server)
}

/// Where php keeps its sessions.
#[derive(Debug, Clone, PartialEq)]
pub enum Sessions {
    /// The redis beside the first proxy, `host:port`, and its password.
    Proxy { address: String, password: String },
    /// A linked kvstore (Redis Cluster): its seed nodes (`host:port,...`) and password.
    Cluster { seeds: String, password: String },
}

impl Sessions {
    /// phpredis' session handler and save path.
    fn handler_and_path(&self) -> (&'static str, String) {
        match self {
            Sessions::Proxy { address, password } => (
                "redis",
                format!("tcp://{address}?auth={}", percent_encode(password)),
            ),
            Sessions::Cluster { seeds, password } => {
                let mut path: Vec<String> = seeds
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("seed[]={s}"))
                    .collect();
                path.push(format!("auth={}", percent_encode(password)));
                // A master that fails over is waited for, not read from a stale replica.
                path.push("timeout=2&read_timeout=2&failover=none&persistent=1".into());
                ("rediscluster", path.join("&"))
            }
        }
    }
}

/// `text` with every byte but letters, digits and `-._~` as `%XX` (a query string's value).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// php-fpm: one pool on a local socket, the Service's settings as admin values (scripts cannot
/// override them), sessions in a linked kvstore or else the redis beside the first proxy when
/// it is known, and the environment given (links) visible through `getenv()`.
pub fn php_fpm(
    dir: &Path,
    user: Option<&str>,
    socket: &Path,
    settings: &BTreeMap<&str, String>,
    sessions: Option<&Sessions>,
    env: &BTreeMap<String, String>,
) -> String {
    let d = dir.display();
    let mut pool = format!(
        "[global]
pid = {d}/php-fpm.pid
error_log = {d}/../logs/php-fpm.log
daemonize = no
; A reload lets the workers finish their requests.
process_control_timeout = 30s

[www]
listen = {socket}
listen.mode = 0666
pm = dynamic
pm.max_children = 16
pm.start_servers = 4
pm.min_spare_servers = 2
pm.max_spare_servers = 6
catch_workers_output = yes
clear_env = yes
php_admin_value[error_log] = {d}/../logs/php-errors.log
",
        socket = socket.display()
    );
    if let Some(user) = user {
        pool.push_str(&format!("user = {user}\ngroup = {user}\n"));
    }
    for (key, value) in settings {
        match *key {
            "display_errors" | "log_errors" => {
                pool.push_str(&format!(
                    "php_admin_flag[{key}] = {}\n",
                    value.to_lowercase()
                ));
            }
            _ => pool.push_str(&format!("php_admin_value[{key}] = {value}\n")),
        }
    }
    if let Some(sessions) = sessions {
        let (handler, path) = sessions.handler_and_path();
        pool.push_str(&format!(
            "php_admin_value[session.save_handler] = {handler}\nphp_admin_value[session.save_path] = \"{path}\"\n"
        ));
    }
    // php-fpm's env[] takes the rest of the line (quotes keep spaces and '='), and refuses an
    // empty value: such a variable is left unset.
    for (name, value) in env.iter().filter(|(_, v)| !v.is_empty()) {
        pool.push_str(&format!("env[{name}] = \"{}\"\n", value.replace('"', "")));
    }
    pool
}

/// The sessions' redis (its configuration file): no persistence, on the node's address, and
/// only for clients that give the Service's sessions password (the backends): whoever else
/// reaches the address could read and forge every session. `password` is quotable
/// (`read_password` checked it).
pub fn redis_conf(dir: &Path, address: &str, password: &str) -> String {
    format!(
        "# Written by the ConPaaS agent.
bind {address}
port {REDIS_PORT}
protected-mode yes
requirepass \"{password}\"
save \"\"
appendonly no
daemonize no
dir {}
",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_routes_by_kind_of_request_and_keeps_the_clients_host() {
        let dir = Path::new("/n/php");
        let both = proxy_nginx(
            dir,
            None,
            "10.0.0.1",
            &["10.0.0.2".into(), "10.0.0.3".into()],
            &["10.0.0.4".into()],
            "8M",
            &Dynamic::Php,
        );
        assert!(both.contains("listen 10.0.0.1:80;"));
        assert!(both.contains("server 10.0.0.2:8080") && both.contains("server 10.0.0.3:8080"));
        assert!(
            both.contains("proxy_pass http://webs;")
                && both.contains("error_page 404 = @backends;")
        );
        assert!(both.contains("proxy_set_header Host $http_host;"));
        assert!(both.contains("client_max_body_size 8M;"));
        let no_web = proxy_nginx(
            dir,
            None,
            "10.0.0.1",
            &["10.0.0.2".into()],
            &[],
            "8M",
            &Dynamic::Php,
        );
        assert!(!no_web.contains("webs"), "{no_web}");
        let nothing = proxy_nginx(dir, None, "10.0.0.1", &[], &[], "8M", &Dynamic::Php);
        assert!(nothing.contains("location / { return 503; }"), "{nothing}");
        assert!(!nothing.contains("upstream backends"));
    }

    #[test]
    fn a_java_proxy_sends_servlet_paths_and_jsps_to_the_backends_and_the_rest_to_the_web_nodes() {
        let dir = Path::new("/n/php");
        let backends = ["10.0.0.2".to_string()];
        let webs = ["10.0.0.4".to_string()];
        let patterns = |p: &[&str]| Dynamic::Servlets(p.iter().map(|s| s.to_string()).collect());
        let java = proxy_nginx(
            dir,
            None,
            "10.0.0.1",
            &backends,
            &webs,
            "8M",
            &patterns(&["/api/*", "/api", "*.do", "/x;y", ""]),
        );
        for location in [
            "location ~* \\.jspx?$ { proxy_pass http://backends; }",
            "location = /api { proxy_pass http://backends; }",
            "location ^~ /api/ { proxy_pass http://backends; }",
            "location ~ \\.do$ { proxy_pass http://backends; }",
            "location = / { proxy_pass http://backends; }",
        ] {
            assert!(java.contains(location), "{location} in {java}");
        }
        assert_eq!(java.matches("location = /api ").count(), 1, "{java}");
        assert!(
            !java.contains("x;y"),
            "a pattern nginx would misread is left out"
        );
        assert!(
            java.contains("location / { \n            proxy_pass http://webs;"),
            "{java}"
        );
        let everything = proxy_nginx(
            dir,
            None,
            "10.0.0.1",
            &backends,
            &webs,
            "8M",
            &patterns(&["/"]),
        );
        assert!(
            everything.contains("location / { proxy_pass http://backends; }"),
            "{everything}"
        );
        assert!(!everything.contains("http://webs;"), "{everything}");
    }

    #[test]
    fn backends_run_php_from_the_resolved_code_folder_and_web_nodes_never_serve_sources() {
        let dir = Path::new("/n/php");
        let b = backend_nginx(
            dir,
            Some("www-data"),
            "10.0.0.2",
            Path::new("/n/www"),
            Path::new("/n/php/fpm.sock"),
            "8M",
        );
        assert!(b.starts_with("# Written by the ConPaaS agent.\nuser www-data;"));
        assert!(b.contains("SCRIPT_FILENAME $realpath_root$fastcgi_script_name"));
        assert!(b.contains("fastcgi_param HTTP_HOST $http_host;"));
        assert!(b.contains("fastcgi_pass unix:/n/php/fpm.sock;"));
        let w = web_nginx(dir, None, "10.0.0.4", Path::new("/n/www"), &["\\.php$"]);
        assert!(w.contains("location ~* \\.php$ { return 404; }"), "{w}");
        // The serving probe's file answers the node itself only.
        let only_self = |address: &str| {
            format!("location = /.conpaas-serving {{ allow {address}; deny all; }}")
        };
        assert!(b.contains(&only_self("10.0.0.2")), "{b}");
        assert!(w.contains(&only_self("10.0.0.4")), "{w}");
    }

    #[test]
    fn php_fpm_applies_settings_sessions_and_the_link_environment() {
        let settings = BTreeMap::from([
            ("memory_limit", "256M".to_string()),
            ("display_errors", "On".to_string()),
        ]);
        let env = BTreeMap::from([
            ("DB_HOST".to_string(), "10.0.0.9".to_string()),
            ("DB_PASSWORD".to_string(), String::new()),
        ]);
        let pool = php_fpm(
            Path::new("/n/php"),
            None,
            Path::new("/n/php/fpm.sock"),
            &settings,
            Some(&Sessions::Proxy {
                address: "10.0.0.1:6379".into(),
                password: "p&w".into(),
            }),
            &env,
        );
        assert!(pool.contains("php_admin_value[memory_limit] = 256M"));
        assert!(pool.contains("php_admin_flag[display_errors] = on"));
        assert!(pool.contains("session.save_path] = \"tcp://10.0.0.1:6379?auth=p%26w\""));
        assert!(pool.contains("env[DB_HOST] = \"10.0.0.9\""));
        assert!(
            !pool.contains("DB_PASSWORD"),
            "php-fpm refuses an empty env[]"
        );
        assert!(!pool.contains("user ="), "no user when not root");
        let cluster = Sessions::Cluster {
            seeds: "10.0.0.5:6379,10.0.0.6:6379".into(),
            password: "p&=w d".into(),
        };
        let pool = php_fpm(
            Path::new("/n/php"),
            None,
            Path::new("/n/php/fpm.sock"),
            &settings,
            Some(&cluster),
            &env,
        );
        assert!(pool.contains("php_admin_value[session.save_handler] = rediscluster\n"));
        assert!(
            pool.contains("session.save_path] = \"seed[]=10.0.0.5:6379&seed[]=10.0.0.6:6379&auth=p%26%3Dw%20d&"),
            "{pool}"
        );
    }
}
