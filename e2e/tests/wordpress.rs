//! The WordPress example (`manifests/examples/wordpress/`) end to end on Debian's WordPress:
//! uploaded with the example's `wp-config.php` (which reads the link's environment), installed
//! over HTTP, a post written through XML-RPC, an image uploaded through the one backend into the
//! shared filesystem volume, the php backends scaled 1 -> 3 -> 1 under a steady load of page
//! views without a failed request, the image served by every backend, the post still there, and
//! deleting everything leaves nothing running.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use conpaas_e2e::tools::{cpsctl, run};
use kube::api::{Patch, PatchParams};
use serde_json::json;

const NS: &str = "wordpress-e2e";
const EXAMPLE_DIR: &str = "../manifests/examples/wordpress";
const ADMIN_PASSWORD: &str = "Conpaas-e2e-2026!";

/// Copies `from` into `to`, links followed (code archives carry no links), leaving out what
/// `skip` names (relative paths).
fn copy_following_links(from: &Path, to: &Path, skip: &[&str], root: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap();
        if skip.iter().any(|s| relative == Path::new(s)) {
            continue;
        }
        // A link whose target is gone is left out.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let target = to.join(entry.file_name());
        if meta.is_dir() {
            copy_following_links(&path, &target, skip, root);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Debian's WordPress with the example's wp-config.php, as a folder to upload.
fn wordpress_code(dir: &Path) {
    let debian = Path::new("/usr/share/wordpress");
    assert!(
        debian.join("wp-settings.php").is_file(),
        "Debian's WordPress (package wordpress) is not installed"
    );
    assert!(
        debian.join("wp-content/themes/twentytwentythree").is_dir(),
        "WordPress' default theme (package wordpress-theme-twentytwentythree) is not installed: posts would render as empty pages"
    );
    copy_following_links(
        debian,
        dir,
        &[".htaccess", "wp-config.php", "wp-config-sample.php"],
        debian,
    );
    std::fs::copy(
        Path::new(EXAMPLE_DIR).join("wp-config.php"),
        dir.join("wp-config.php"),
    )
    .unwrap();
}

fn form(fields: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn new_post_call(title: &str, content: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<methodCall><methodName>wp.newPost</methodName><params>
<param><value><int>1</int></value></param>
<param><value><string>admin</string></value></param>
<param><value><string>{ADMIN_PASSWORD}</string></value></param>
<param><value><struct>
<member><name>post_title</name><value><string>{title}</string></value></member>
<member><name>post_content</name><value><string>{content}</string></value></member>
<member><name>post_status</name><value><string>publish</string></value></member>
</struct></value></param>
</params></methodCall>"#
    )
}

/// A 2x2 PNG.
const IMAGE: [u8; 72] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x0f, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0x00, 0x04,
    0x30, 0xe2, 0x3f, 0x00, 0x1b, 0xf3, 0x03, 0xfd, 0x9a, 0x6f, 0x57, 0xae, 0x00, 0x00, 0x00, 0x00,
    0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn upload_file_call(name: &str, bytes: &[u8]) -> String {
    format!(
        r#"<?xml version="1.0"?>
<methodCall><methodName>wp.uploadFile</methodName><params>
<param><value><int>1</int></value></param>
<param><value><string>admin</string></value></param>
<param><value><string>{ADMIN_PASSWORD}</string></value></param>
<param><value><struct>
<member><name>name</name><value><string>{name}</string></value></member>
<member><name>type</name><value><string>image/png</string></value></member>
<member><name>bits</name><value><base64>{}</base64></value></member>
</struct></value></param>
</params></methodCall>"#,
        base64(bytes)
    )
}

/// GET `path` from `address:port`: the status and the body's bytes.
async fn get_bytes(address: &str, port: u16, path: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((address, port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&response[..end])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response[end + 4..].to_vec())
}

/// What `kubectl scale services.conpaas.io/blog --replicas=N` does.
async fn scale_backends(env: &Env, count: i32) {
    let patch = json!({"spec": {"replicas": count}});
    env.services()
        .patch_scale("blog", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wordpress_installs_posts_and_scales_under_load_without_a_failed_request() {
    let env = env(NS, 63).await;
    let manifest = std::fs::read_to_string(Path::new(EXAMPLE_DIR).join("wordpress.yaml"))
        .expect("the WordPress example");
    env.apply_cloud_and_app().await;
    env.apply(&manifest).await;
    env.wait_code_api().await;
    let code = tempfile::tempdir().unwrap();
    wordpress_code(code.path());
    let uploaded = Instant::now();
    let args = [
        "-n",
        NS,
        "code",
        "upload",
        "blog",
        code.path().to_str().unwrap(),
        "--version",
        "v1",
        "--activate",
    ];
    run(&cpsctl(), &args, &env.cp.kubeconfig, None)
        .expect("cpsctl")
        .ok();
    env.wait_ready("blog-db", "mysql 1/1, glb 0/0").await;
    env.wait_ready("blog-files", "storage 1/1").await;
    env.wait_ready("blog", "proxy 1/1, web 0/0, backend 1/1")
        .await;
    println!(
        "WordPress uploaded and serving {:.1}s after the upload began",
        uploaded.elapsed().as_secs_f64()
    );
    let proxy = env.url_host("blog").await;

    // Installed over HTTP, as a user would in a browser.
    let install = form(&[
        ("weblog_title", "ConPaaS blog"),
        ("user_name", "admin"),
        ("admin_password", ADMIN_PASSWORD),
        ("admin_password2", ADMIN_PASSWORD),
        ("pw_weak", "on"),
        ("admin_email", "admin@example.com"),
        ("blog_public", "0"),
    ]);
    let (status, body, _) = http_request(
        &proxy,
        "POST",
        "/wp-admin/install.php?step=2",
        &[("content-type", "application/x-www-form-urlencoded")],
        install.as_bytes(),
    )
    .await
    .unwrap();
    assert!(
        status == 200 && body.contains("Success!"),
        "install: {status} {}",
        tail(&body, 20)
    );

    // A post, written through XML-RPC (which needs php-xml on the backends).
    let (status, body, _) = http_request(
        &proxy,
        "POST",
        "/xmlrpc.php",
        &[("content-type", "text/xml")],
        new_post_call("Hello from ConPaaS", "Served by elastic PHP.").as_bytes(),
    )
    .await
    .unwrap();
    let id: u64 = body
        .split("<string>")
        .nth(1)
        .and_then(|s| s.split("</string>").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no post id in the XML-RPC answer ({status}): {body}"));
    // Debian's WordPress uses pretty permalinks: the backends' nginx sends them to index.php.
    let (status, _, headers) = http_send(&proxy, "GET", &format!("/?p={id}"), &[])
        .await
        .unwrap();
    let location = headers.get("location").cloned().unwrap_or_default();
    assert_eq!(status, 301, "{headers:?}");
    let post = location
        .strip_prefix(&format!("http://{proxy}"))
        .unwrap_or_else(|| panic!("a permalink on the blog's address: {location}"))
        .to_string();
    let (status, page, _) = http_send(&proxy, "GET", &post, &[]).await.unwrap();
    assert_eq!(status, 200, "{}", tail(&page, 20));
    assert!(page.contains("Hello from ConPaaS"), "{}", tail(&page, 40));

    // An image uploaded through the one backend lands in the shared volume.
    let (status, body, _) = http_request(
        &proxy,
        "POST",
        "/xmlrpc.php",
        &[("content-type", "text/xml")],
        upload_file_call("conpaas.png", &IMAGE).as_bytes(),
    )
    .await
    .unwrap();
    let image_url = body
        .split("<name>url</name><value><string>")
        .nth(1)
        .and_then(|s| s.split("</string>").next())
        .unwrap_or_else(|| panic!("no url in the upload's answer ({status}): {body}"))
        .to_string();
    let image = image_url
        .strip_prefix(&format!("http://{proxy}"))
        .unwrap_or_else(|| panic!("an upload on the blog's address: {image_url}"))
        .to_string();
    assert!(image.starts_with("/wp-content/uploads/"), "{image}");

    // Page views while the backends go 1 -> 3 -> 1.
    let load = Load::start(proxy.clone(), 4, &[&post, "/"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let asked = Instant::now();
    scale_backends(&env, 3).await;
    env.wait_ready("blog", "proxy 1/1, web 0/0, backend 3/3")
        .await;
    println!(
        "wordpress scale 1 -> 3: {:.1}s to 3 ready backends",
        asked.elapsed().as_secs_f64()
    );
    // Every backend, the two new ones too, serves the image uploaded through the first.
    let backends: Vec<String> = env
        .nodes("blog")
        .await
        .into_iter()
        .filter(|n| n.spec.role == "backend")
        .filter_map(|n| n.status?.address)
        .collect();
    assert_eq!(backends.len(), 3);
    for backend in &backends {
        let (status, bytes) = get_bytes(backend, 8080, &image).await;
        assert_eq!(status, 200, "backend {backend} serves {image}");
        assert_eq!(bytes, IMAGE, "backend {backend} serves the uploaded bytes");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    scale_backends(&env, 1).await;
    env.wait_role_count("blog", "backend", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.finish_without_failures("wordpress under load (page views)", 20, "")
        .await;
    let (_, page, _) = http_send(&proxy, "GET", &post, &[]).await.unwrap();
    assert!(
        page.contains("Hello from ConPaaS"),
        "the post is still there"
    );

    delete_and_expect_nothing_running(&env, &["blog", "blog-db", "blog-files"]).await;
}
