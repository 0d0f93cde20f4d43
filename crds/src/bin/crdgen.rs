//! Writes the operator's CRDs into a folder (default `manifests/crds`), one file per CRD.
//! `crdgen -` prints them all to stdout instead, as one multi-document stream.

use std::path::PathBuf;

use conpaas_crds::generate;

fn main() -> std::io::Result<()> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "manifests/crds".into());
    let crds = generate::all();
    if target == "-" {
        for crd in &crds {
            print!("---\n{}", generate::to_yaml(crd));
        }
        return Ok(());
    }
    let dir = PathBuf::from(target);
    std::fs::create_dir_all(&dir)?;
    for crd in &crds {
        let path = dir.join(generate::file_name(crd));
        std::fs::write(&path, generate::to_yaml(crd))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
