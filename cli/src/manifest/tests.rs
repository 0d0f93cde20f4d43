use super::*;

/// Reads an example manifest at run time (not compile time: a shared build cache may hold a
/// binary compiled in another checkout).
fn example(name: &str) -> Value {
    let path = format!("../manifests/examples/conpaas/{name}");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

/// Serves fixed bytes per URL, and counts downloads.
fn fetcher(calls: &mut Vec<String>) -> impl FnMut(&str) -> anyhow::Result<Vec<u8>> + '_ {
    move |url: &str| {
        calls.push(url.to_string());
        Ok(if url.ends_with(".sh") {
            format!("#!/bin/sh\n# from {url}\n").into_bytes()
        } else {
            b"archive bytes".to_vec()
        })
    }
}

fn without_passwords(mut manifest: Value) -> Value {
    for svc in manifest["Services"].as_array_mut().unwrap() {
        svc.as_object_mut().unwrap().remove("Password");
    }
    manifest
}

fn round_trip(name: &str) -> (Value, Imported, Vec<String>) {
    let original = example(name);
    let mut calls = Vec::new();
    let imported = import(&original, "local", &mut fetcher(&mut calls)).unwrap();
    let (exported, export_warnings) = export(&imported.application, &imported.services);
    assert_eq!(
        exported,
        without_passwords(original),
        "{name}: the round trip keeps every field but Password"
    );
    (exported, imported, export_warnings)
}

#[test]
fn wordpress_round_trips_and_names_what_is_not_acted_on() {
    let (_, imported, export_warnings) = round_trip("wordpress.json");
    assert_eq!(imported.application["metadata"]["name"], "wordpress");
    assert_eq!(
        imported.application["spec"],
        json!({"cloud": "local", "description": "WordPress on PHP with a MySQL database, as the ConPaaS frontend offered it"})
    );
    let names: Vec<&str> = imported
        .services
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["wordpress-db", "wordpress"]);
    let web = &imported.services[1]["spec"];
    assert_eq!(web["type"], "php");
    assert_eq!(
        web["roles"],
        json!([{"name": "backend", "count": 2}, {"name": "proxy", "count": 1}, {"name": "web", "count": 1}])
    );
    assert_eq!(
        web["code"]["versions"][0]["sha256"],
        hex::encode(Sha256::digest(b"archive bytes"))
    );
    assert!(
        web["startupScript"]
            .as_str()
            .unwrap()
            .contains("configure.sh")
    );
    // The database's Dump is its code: loaded once activated.
    let db = &imported.services[0]["spec"];
    assert_eq!(
        db["code"]["versions"][0]["url"],
        "https://conpaas.example.org/wordpress/wordpress-db.sql"
    );
    assert_eq!(db["code"]["active"], "v1");
    assert_eq!(
        imported.warnings,
        [
            "Services[0].Password: not imported (a secret does not belong in an annotation); set it on the service again"
        ]
    );
    assert!(export_warnings.is_empty(), "{export_warnings:?}");
}

#[test]
fn mediawiki_round_trips_with_clouds_stopped_services_and_volumes() {
    let (_, imported, _) = round_trip("mediawiki.json");
    assert_eq!(
        imported.application["metadata"]["annotations"][ANNOTATION_DISPLAY_NAME],
        "My Wiki"
    );
    assert_eq!(imported.application["metadata"]["name"], "my-wiki");
    let fs = &imported.services[1]["spec"];
    assert_eq!(fs["type"], "filesystem");
    assert_eq!(
        fs["roles"],
        json!([{"name": "storage", "count": 2, "cloud": "ec2"}])
    );
    assert_eq!(fs["filesystem"], json!({"volumes": [{"name": "data"}]}));
    assert_eq!(imported.services[2]["spec"]["state"], "Stopped");
    assert!(
        imported
            .warnings
            .iter()
            .any(|w| w.starts_with("Services[1].VolumeStartup.owner: not acted on"))
    );
}

#[test]
fn bad_manifests_name_the_field() {
    let mut calls = Vec::new();
    let mut fetch = fetcher(&mut calls);
    let cases = [
        (json!({"Services": []}), "Application: missing"),
        (
            json!({"Application": "a", "Services": [{"ServiceName": "x"}]}),
            "Services[0].Type: missing",
        ),
        (
            json!({"Application": "a", "Services": [{"Type": "php", "StartupInstances": {"web": -1}}]}),
            "Services[0].StartupInstances.web",
        ),
        (
            json!({"Application": "a", "Services": [{"Type": "php", "Archive": "ftp://x/y.tar"}]}),
            "Services[0].Archive",
        ),
        (
            json!({"Application": "a", "Services": {}}),
            "Services: must be a list",
        ),
    ];
    for (manifest, field) in cases {
        let err = import(&manifest, "local", &mut fetch)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            err.starts_with(field),
            "{manifest}: {err:?} should name {field}"
        );
    }
}

#[test]
fn names_become_kubernetes_names() {
    assert_eq!(kube_name("My Wiki (2)", 63, "app"), "my-wiki-2");
    assert_eq!(kube_name("42", 40, "svc"), "svc-42");
    assert_eq!(kube_name("!!!", 40, "svc"), "svc");
    assert_eq!(kube_name(&"a".repeat(50), 40, "svc").len(), 40);
}

#[test]
fn an_xtreemfs_service_imports_as_a_filesystem_with_its_volume_and_round_trips() {
    let original = json!({"Application": "wiki", "Services": [
        {"Type": "xtreemfs", "ServiceName": "files", "StartupInstances": {"osd": 3},
         "VolumeStartup": {"volumeName": "Data", "owner": "www-data"}}
    ]});
    let mut calls = Vec::new();
    let imported = import(&original, "local", &mut fetcher(&mut calls)).unwrap();
    let spec = &imported.services[0]["spec"];
    assert_eq!(spec["type"], "filesystem");
    assert_eq!(spec["roles"], json!([{"name": "storage", "count": 3}]));
    assert_eq!(spec["filesystem"], json!({"volumes": [{"name": "data"}]}));
    assert!(
        imported
            .warnings
            .iter()
            .any(|w| w.starts_with("Services[0].VolumeStartup.owner: not acted on")),
        "{:?}",
        imported.warnings
    );
    let (exported, _) = export(&imported.application, &imported.services);
    assert_eq!(exported, original);
}
