//! java on Debian's Tomcat 10 and nginx, linked to mysql: the proxy sends the WAR's servlet
//! paths and JSPs to the backends and the rest to the web node, a servlet writes and reads rows
//! through the link (JDBC, the link's environment), backends go 1 -> 3 -> 1 and a new code
//! version is activated under a steady load without one failed request, the database's
//! password rotates under writes without one either, and deleting both
//! Services leaves nothing running.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use conpaas_e2e::tools::{cpsctl, run};
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// The servlet (a JSP mapped in web.xml): `/api/rows` counts (and on POST adds) rows through the
/// link, `/api/slow` takes 2 s, anything else says which version and backend answered.
const API: &str = r#"<%@ page import="java.sql.*" contentType="text/plain" %><%
String path = request.getPathInfo() == null ? "" : request.getPathInfo();
if (path.equals("/rows")) {
    Class.forName("org.mariadb.jdbc.Driver");
    String url = "jdbc:mariadb://" + System.getenv("DB_HOST") + ":" + System.getenv("DB_PORT") + "/" + System.getenv("DB_DATABASE");
    try (Connection c = DriverManager.getConnection(url, System.getenv("DB_USER"), System.getenv("DB_PASSWORD"))) {
        // Made once: in Galera a DDL statement aborts the transactions it meets.
        if (!c.getMetaData().getTables(null, null, "notes", null).next()) {
            c.createStatement().execute("CREATE TABLE IF NOT EXISTS notes (id INT AUTO_INCREMENT PRIMARY KEY, text VARCHAR(64))");
        }
        if (request.getMethod().equals("POST")) {
            c.createStatement().executeUpdate("INSERT INTO notes (text) VALUES ('note')");
        }
        ResultSet r = c.createStatement().executeQuery("SELECT COUNT(*) FROM notes");
        r.next();
        out.print(r.getLong(1));
    }
} else {
    if (path.equals("/slow")) Thread.sleep(2000);
    out.print("VERSION served by " + request.getLocalAddr());
}
%>"#;

const WEB_XML: &str = r#"<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0">
  <servlet><servlet-name>api</servlet-name><jsp-file>/api.jsp</jsp-file></servlet>
  <servlet-mapping><servlet-name>api</servlet-name><url-pattern>/api/*</url-pattern></servlet-mapping>
</web-app>
"#;

fn war(version: &str) -> Vec<u8> {
    let driver = std::fs::read("/usr/share/java/mariadb-java-client.jar")
        .expect("the MariaDB JDBC driver (Debian package libmariadb-java)");
    let api = API.replace("VERSION", version);
    zip_of(&[
        ("WEB-INF/web.xml", WEB_XML.as_bytes()),
        ("WEB-INF/lib/mariadb-java-client.jar", &driver),
        ("api.jsp", api.as_bytes()),
        ("hello.jsp", b"<%= 6 * 7 %> from a JSP"),
        ("index.html", b"static hello\n"),
    ])
}

fn app(backends: i32, active: &str) -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "app"},
        "spec": {
            "application": "demo", "type": "java",
            "roles": [{"name": "proxy", "count": 1}, {"name": "web", "count": 1}, {"name": "backend", "count": backends}],
            "links": [{"service": "db", "as": "DB"}],
            "drainSeconds": 3,
            "code": {"active": active, "versions": [
                {"name": "v1", "configMap": {"name": "app-v1", "key": "app.war"}},
                {"name": "v2", "configMap": {"name": "app-v2", "key": "app.war"}}
            ]}
        }
    })
}

async fn apply_app(env: &Env, backends: i32, active: &str) {
    let pp = PatchParams::apply("conpaas-e2e").force();
    env.services()
        .patch("app", &pp, &Patch::Apply(app(backends, active)))
        .await
        .unwrap();
}

async fn get(proxy: &str, path: &str) -> (u16, String) {
    let (status, body, _) = http_send(proxy, "GET", path, &[]).await.unwrap();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn java_serves_servlets_through_a_link_and_scales_under_load_without_a_failed_request() {
    // VMs are powered off as EC2 terminates them: only the drain protects requests in flight.
    let env = env_with("java-e2e", 62, &[("CONPAAS_LOCAL_STOP_GRACE_SECONDS", "0")]).await;
    env.apply_cloud_and_app().await;
    create_config_map(&env, "app-v1", "app.war", war("v1")).await;
    create_config_map(&env, "app-v2", "app.war", war("v2")).await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: db}\nspec: {application: demo, type: mysql, settings: {database: shop, previous_user_seconds: \"180\"}}\n")
        .await;
    apply_app(&env, 1, "v1").await;
    env.wait_ready("db", "mysql 1/1, glb 0/0").await;
    env.wait_ready("app", "proxy 1/1, web 1/1, backend 1/1")
        .await;
    let proxy = env.url_host("app").await;
    let address_of = |role: &'static str| {
        let env = &env;
        async move {
            env.nodes("app")
                .await
                .into_iter()
                .filter(|n| n.spec.role == role)
                .filter_map(|n| n.status?.address)
                .collect::<Vec<_>>()
        }
    };
    let backend = address_of("backend").await[0].clone();
    let web = address_of("web").await[0].clone();

    // Servlet paths and JSPs reach Tomcat; static files come from the web node, which never
    // serves a JSP's source or anything under WEB-INF.
    assert_eq!(
        get(&proxy, "/api/who").await,
        (200, format!("v1 served by {backend}"))
    );
    assert_eq!(
        get(&proxy, "/hello.jsp").await,
        (200, "42 from a JSP".into())
    );
    assert_eq!(
        get(&proxy, "/index.html").await,
        (200, "static hello\n".into())
    );
    assert_eq!(
        http_get_path(&web, 8080, "/index.html").await.unwrap(),
        "static hello\n"
    );
    for hidden in ["/hello.jsp", "/WEB-INF/web.xml", "/web-inf/web.xml"] {
        let body = http_get_path(&web, 8080, hidden).await.unwrap();
        assert!(
            !body.contains("<%") && !body.contains("<servlet"),
            "the web node served {hidden}: {body}"
        );
    }
    assert!(!get(&proxy, "/WEB-INF/web.xml").await.1.contains("<servlet"));

    // Rows through the link.
    for i in 1..=10 {
        let (status, count, _) = http_send(&proxy, "POST", "/api/rows", &[]).await.unwrap();
        assert_eq!((status, count), (200, i.to_string()));
    }

    let load = Load::start(proxy.clone(), 4, &["/api/who", "/api/slow"]);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1 -> 3 -> 1 under load.
    let asked = Instant::now();
    apply_app(&env, 3, "v1").await;
    conpaas_e2e::wait::until("3 backends answering", LIMIT, || {
        let load = load.clone();
        async move { Ok(load.responders().len() == 3) }
    })
    .await
    .unwrap();
    println!(
        "java scale 1 -> 3: new backends took requests {:.1}s after the patch",
        asked.elapsed().as_secs_f64()
    );
    env.wait_ready("app", "proxy 1/1, web 1/1, backend 3/3")
        .await;
    let failed_at = |step: &str| {
        println!(
            "{step}: {} failed so far",
            load.failed.load(Ordering::Relaxed)
        );
    };
    failed_at("after 1 -> 3");

    // The database's password rotates under writes: the backends restart Tomcat for the new
    // link environment one at a time, the others serving meanwhile.
    let numeric = |body: &str| body.parse::<u64>().is_ok();
    let writes = Load::start_checked(proxy.clone(), 2, &["/api/rows"], numeric);
    let rotated = Instant::now();
    let args = ["-n", env.ns.as_str(), "mysql", "password", "db", "--wait"];
    run(&cpsctl(), &args, &env.cp.kubeconfig, None)
        .expect("cpsctl")
        .ok();
    let accepted = env.services().get("db").await.unwrap();
    let version = accepted.status.and_then(|s| s.credentials_version);
    conpaas_e2e::wait::until("every backend on the new credentials", LIMIT, || {
        let (env, version) = (&env, &version);
        async move {
            let backends: Vec<_> = env
                .nodes("app")
                .await
                .into_iter()
                .filter(|n| n.spec.role == "backend")
                .collect();
            Ok(backends.len() == 3
                && backends.iter().all(|n| {
                    n.spec.links.iter().all(|l| &l.secret_version == version)
                        && n.status.as_ref().is_some_and(|s| {
                            s.agent.as_ref().is_some_and(|a| {
                                a.observed_generation == n.metadata.generation
                                    && a.state == Some(conpaas_crds::v1alpha1::AgentState::Ready)
                            })
                        })
                }))
        }
    })
    .await
    .unwrap();
    println!(
        "java: the three backends restarted for the new password {:.1}s after the rotation",
        rotated.elapsed().as_secs_f64()
    );
    writes
        .finish_without_failures("java writes while the password rotated", 10, "")
        .await;
    let written = writes.ok.load(Ordering::Relaxed);
    failed_at("after the rotation");
    let asked = Instant::now();
    apply_app(&env, 1, "v1").await;
    env.wait_role_count("app", "backend", 1).await;
    println!(
        "java scale 3 -> 1: drained and deleted {:.1}s after the patch",
        asked.elapsed().as_secs_f64()
    );

    failed_at("after 3 -> 1");
    // A new version under load: deployed beside the old one, it takes the next requests.
    apply_app(&env, 1, "v2").await;
    conpaas_e2e::wait::until("v2 serving", LIMIT, || async {
        Ok(get(&proxy, "/api/who").await.1.starts_with("v2 served by"))
    })
    .await
    .unwrap();
    env.wait_ready("app", "proxy 1/1, web 1/1, backend 1/1")
        .await;
    failed_at("after v1 -> v2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.finish_without_failures("java under load", 50, "")
        .await;
    // Every write answered is there; each of the two writers may have had one more in flight
    // when the count was read (a first request after a restart compiles the JSP for seconds).
    let (status, rows) = get(&proxy, "/api/rows").await;
    let rows: u64 = rows.parse().unwrap_or_else(|_| panic!("{status}: {rows}"));
    assert!(
        (10 + written..=10 + written + 2).contains(&rows),
        "{rows} rows, {written} writes answered"
    );

    delete_and_expect_nothing_running(&env, &["app", "db"]).await;
}
