//! Writes the operator's CRDs into a folder (default `manifests/crds`), one file per CRD.
//! `crdgen -` prints them all to stdout instead, as one multi-document stream.
//! `crdgen --docs FILE` writes the service types' page (`docs/service-types.md`).

use std::path::PathBuf;

use conpaas_crds::{generate, types};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_else(|| "manifests/crds".into());
    if target == "--docs" {
        let path = PathBuf::from(
            args.next()
                .unwrap_or_else(|| "docs/service-types.md".into()),
        );
        std::fs::write(&path, types::markdown())?;
        eprintln!("wrote {}", path.display());
        return Ok(());
    }
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
